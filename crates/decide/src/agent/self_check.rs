//! The agent's check of its own node, as a pure, time-injected state machine.
//!
//! This is the schedule the leader's safe time ([`crate::contract::safe_time`]) relies
//! on, so it lives here, beside the leader's core, and the I/O shell
//! (`kube_fencer::cluster::self_check`) only feeds it [`Input`]s and carries out its
//! [`Command`]s:
//!
//! - **API checks**: any contact with the API server proves the path works.
//!   Only when there was no contact for `--api-check-interval` does the agent
//!   probe (`/readyz`, bounded by `--api-check-timeout`), and again every
//!   interval while probes fail (a check that takes longer than the interval
//!   is followed by the next one at once).
//! - **Peers**, from the first failed probe on: after each failed probe, ask
//!   the next batch of at most [`PEER_BATCH`] peers (rotating through all of
//!   them) whether they reach the API and what the cluster records for this
//!   node. Answers and "asked" marks expire after `--peer-silence-timeout`.
//! - **Verdict** from the decision table ([`super::self_fence`]), then the
//!   **self-fence action** when it says so.
//! - While connected and not fenced: **advertise** when the advertisement is
//!   missing, for another boot, or older than [`READVERTISE`]; **refresh the
//!   peers** on the back-off schedule of [`next_peer_refresh`].
//!
//! One check runs at a time, its steps in order (probe → ask peers →
//! verdict → self-fence), each waiting for its result or its own deadline,
//! whichever comes first: a result the shell never delivers counts as a
//! failure at the deadline. The advertisement and the peer refresh run
//! beside the check (their results are taken whenever they come), so a
//! write that hangs never delays the next probe.
//!
//! What the shell must do (the simulator in [`super::protocol`] models
//! exactly this):
//! - deliver only responses as contact: [`Input::ApiResponse`] for any
//!   successful request, [`Input::WatchItem`] with `data: false` for
//!   kube-runtime's `Event::Init` (it is not contact);
//! - feed the watchdog only until the latest [`Command::PermitFeeding`]'s
//!   `until` (a dead man's switch: a hung loop lets it lapse); open the
//!   device at start without pinging one that runs already (the kernel pings
//!   on `WDIOC_SETTIMEOUT` and on every process exit); expedite the reset
//!   ([`EXPEDITED_TIMEOUT`]) on [`Command::SelfFence`] and when a permit
//!   lapsed for [`PERMIT_GRACE`], so an exit ping after it buys little;
//! - persist [`SelfCheck::previous`] after every call (e.g. on a hostPath)
//!   and pass it to [`SelfCheck::new`] on restart: a restarted agent of the
//!   same boot continues the failure run from the persisted last contact,
//!   keeps the persisted peers, and permits feeding only after genuine
//!   contact or an outage verdict;
//! - call [`SelfCheck::tick`] at [`SelfCheck::next_wake`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::self_fence::{self, PeerAnswer, Round, SelfFenceInput, SelfFenceSettings, Verdict};
use super::{Phase, RecordState, SelfFenceAction};
use crate::contract::safe_time;

/// Peers asked at once, after each failed probe. The majority rules count
/// the distinct peers asked within `--peer-silence-timeout`, so in a large
/// cluster they are a sample of 32 or more: a group of nodes cut off together
/// that makes up a fraction f of the cluster answers for a majority of that
/// sample with a probability that falls fast with f (about 1e-10 for f = 10%,
/// 1e-5 for f = 20% with one batch); larger groups trip the storm guard.
pub const PEER_BATCH: usize = 32;
pub use super::watchdog_timing::{EXPEDITED_TIMEOUT, PERMIT_GRACE};

/// Peer list refreshed from the API this often at steady state.
pub const PEER_REFRESH: Duration = Duration::from_secs(300);
/// First refresh interval after start: the other agents of a DaemonSet
/// rollout advertise themselves over the next minutes, so the interval
/// starts short and doubles up to [`PEER_REFRESH`].
pub const PEER_REFRESH_FIRST: Duration = Duration::from_secs(5);
/// The advertisement is re-written at least this often (if it was removed).
pub const READVERTISE: Duration = Duration::from_secs(300);

/// The refresh interval after `previous` (None: the first refresh).
pub fn next_peer_refresh(previous: Option<Duration>) -> Duration {
    previous.map_or(PEER_REFRESH_FIRST, |d| (d * 2).min(PEER_REFRESH))
}

/// The next batch of at most [`PEER_BATCH`] peers from `cursor`, wrapping.
pub fn next_batch(peers: &[String], cursor: &mut usize) -> Vec<String> {
    let n = peers.len().min(PEER_BATCH);
    if peers.is_empty() {
        return Vec::new();
    }
    let start = *cursor % peers.len();
    *cursor = (start + n) % peers.len();
    peers.iter().cycle().skip(start).take(n).cloned().collect()
}

/// The agent's own flags, as far as the check is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSettings {
    pub api_check_interval: Duration,
    pub api_check_timeout: Duration,
    pub api_failure_threshold: u32,
    pub peer_silence_timeout: Duration,
    pub action: SelfFenceAction,
    pub watchdog_timeout: Duration,
    /// `--static-peers` given: the peer list is not read from the API (a
    /// [`Input::Peers`] is then no API contact).
    pub static_peers: bool,
    /// Rule 5b of [`super::self_fence`]: once the own kubelet's Lease has gone
    /// unrenewed this long (`--unreachable-after`), one failed check with
    /// silent peers is isolation. `None`: never (rules 2 and 5 only).
    pub kubelet_stale_after: Option<Duration>,
}

impl CheckSettings {
    fn self_fence_settings(&self) -> SelfFenceSettings {
        SelfFenceSettings {
            api_failure_threshold: self.api_failure_threshold,
            peer_silence_timeout: self.peer_silence_timeout,
        }
    }

    /// How long the agent waits for one peer's answer.
    pub fn peer_answer_timeout(&self) -> Duration {
        safe_time::peer_answer_timeout(self.api_check_timeout)
    }

    /// Bound of writing the advertisement (a GET and a PATCH, each bounded
    /// by twice the API check timeout).
    pub fn advertise_timeout(&self) -> Duration {
        safe_time::advertise_timeout(self.api_check_timeout)
    }

    /// Bound of one peer refresh (a paged list, each page bounded by twice
    /// the API check timeout; the shell gives up on the first slow page).
    pub fn refresh_timeout(&self) -> Duration {
        safe_time::refresh_timeout(self.api_check_timeout)
    }
}

/// A peer's answer about this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReply {
    /// The peer reaches the API server.
    pub api_reachable: bool,
    /// The phase of the record on *my* Node, as the peer read it.
    pub phase: Option<Phase>,
    /// The boot ID in that record.
    pub boot_id: Option<String>,
}

/// What the shell tells the check.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Some API request got a successful response.
    ApiResponse,
    /// A watch stream item; `data: false` for kube-runtime's `Event::Init`
    /// (emitted before any request), `true` for InitApply/InitDone/Apply/Delete.
    WatchItem {
        data: bool,
    },
    /// Result of [`Command::Probe`].
    ProbeDone {
        ok: bool,
    },
    /// One peer's answer to [`Command::AskPeers`]; `None`: no (valid) answer in time.
    PeerReply {
        peer: String,
        reply: Option<PeerReply>,
    },
    /// The own Node's record, as delivered by the own-Node watch.
    OwnRecord(RecordState),
    /// Result of [`Command::RefreshPeers`] (ordered, deduplicated), or the static list.
    Peers(Vec<String>),
    PeersRefreshFailed,
    /// The boot ID, read now; `None`: unreadable (not a reboot).
    BootId(Option<String>),
    /// Result of [`Command::Advertise`].
    Advertised {
        ok: bool,
    },
    /// Result of [`Command::SelfFence`]: whether the action was carried out.
    SelfFenceDone {
        ok: bool,
    },
    /// The own kubelet's Lease, as the own-Lease watch delivered it: its
    /// `renewTime` was `age` ago by the node's wall clock (the kubelet's
    /// clock too; zero when it lies in the future). Not contact by itself:
    /// the watch item that carried it is.
    KubeletLease {
        age: Duration,
    },
}

/// What the check asks the shell to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Probe the API server (`/readyz`), bounded by `timeout`; answer with [`Input::ProbeDone`].
    Probe { timeout: Duration },
    /// Ask each peer (concurrently, each for at most `timeout`); answer each with [`Input::PeerReply`].
    AskPeers {
        peers: Vec<String>,
        timeout: Duration,
    },
    /// Write the advertisement for this boot; answer with [`Input::Advertised`].
    Advertise { boot_id: String },
    /// List the peers; answer with [`Input::Peers`] or [`Input::PeersRefreshFailed`].
    RefreshPeers,
    /// Dead man's switch: the watchdog may be fed until `until`.
    PermitFeeding { until: Instant },
    /// Carry out the self-fence action (watchdog: stop feeding now);
    /// answer with [`Input::SelfFenceDone`].
    SelfFence { description: String },
    /// The verdict changed (for logs and metrics).
    VerdictChanged(Verdict),
}

/// What the shell keeps across agent restarts within one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    pub boot_id: String,
    pub last_contact: Option<Instant>,
    pub self_fence_decided: bool,
    /// The known peers (a restarted agent cut off from the API cannot list
    /// them, and without them an outage would look like isolation).
    pub peers: Vec<String>,
}

/// The step of the running check, and what it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// No check running; the next one is due at `SelfCheck::next_check`.
    Idle,
    Probe {
        deadline: Instant,
    },
    Ask {
        deadline: Instant,
        batch: Vec<String>,
        waiting: BTreeSet<String>,
        got: Vec<(String, PeerReply)>,
    },
    Fence {
        deadline: Instant,
    },
}

/// The agent's check of its own node.
#[derive(Clone, Debug)]
pub struct SelfCheck {
    s: CheckSettings,
    boot_id: String,
    /// Last API contact.
    last_contact: Option<Instant>,
    own_record: RecordState,
    failures: u32,
    /// End of the first failed probe of the current run of failures.
    unreachable_since: Option<Instant>,
    /// peer → (when, answer)
    answers: BTreeMap<String, (Instant, PeerAnswer)>,
    /// peer → when it was last asked
    asked: BTreeMap<String, Instant>,
    peers: Vec<String>,
    cursor: usize,
    /// When the peers are to be refreshed next, and the interval that led there.
    peers_due: Option<(Instant, Duration)>,
    advertised: Option<(String, Instant)>,
    verdict: Verdict,
    last_verdict: Option<Verdict>,
    fenced: bool,
    /// The self-fence verdict was reached (at least once, this boot).
    decided: bool,
    /// When the next check starts (while idle).
    next_check: Instant,
    step: Step,
    /// The running check: when it started, and whether the API answered.
    started: Instant,
    ok: bool,
    /// Commands produced before the first call (at construction).
    startup: Vec<Command>,
    /// Genuine API contact since this check started (a restarted agent
    /// feeds the watchdog only after it, or after an outage verdict).
    contacted: bool,
    /// An advertisement in flight: for which boot, from which check, until when.
    advertising: Option<(String, Instant, Instant)>,
    /// A peer refresh in flight, until when.
    refreshing: Option<Instant>,
    /// The own kubelet's last Lease renewal seen (`None`: none seen).
    kubelet_renewed: Option<Instant>,
    /// The running check's round of asking (rule 5b counts only it).
    round: Round,
}

impl SelfCheck {
    /// A check started at `now` with the node's boot ID (`None`: unreadable).
    /// `previous` is what an earlier agent of this boot persisted.
    pub fn new(
        settings: CheckSettings,
        now: Instant,
        boot_id: Option<String>,
        previous: Option<Previous>,
    ) -> Self {
        let boot_id = boot_id.unwrap_or_default();
        let mut check = SelfCheck {
            startup: Vec::new(),
            s: settings,
            boot_id,
            last_contact: None,
            own_record: RecordState::Absent,
            failures: 0,
            unreachable_since: None,
            answers: BTreeMap::new(),
            asked: BTreeMap::new(),
            peers: Vec::new(),
            cursor: 0,
            peers_due: None,
            advertised: None,
            verdict: Verdict::Healthy,
            last_verdict: None,
            fenced: false,
            decided: false,
            // The first check at once: nothing feeds the watchdog before it.
            next_check: now,
            step: Step::Idle,
            started: now,
            ok: true,
            contacted: false,
            advertising: None,
            refreshing: None,
            kubelet_renewed: None,
            round: Round::default(),
        };
        if let Some(p) = previous.filter(|p| p.boot_id == check.boot_id) {
            check.resume(now, p);
        }
        check
    }

    /// An earlier agent of this boot left `p`: continue its failure run
    /// from its last contact, as if it had never stopped checking.
    fn resume(&mut self, now: Instant, p: Previous) {
        self.last_contact = p.last_contact;
        self.decided = p.self_fence_decided;
        self.peers = p.peers;
        let Some(c) = p.last_contact else {
            return;
        };
        // The schedule: the first failed check ends i + t after the last
        // contact, then one every p.
        let first = c + self.s.api_check_interval + self.s.api_check_timeout;
        if now >= first {
            let period = safe_time::failing_check_period(
                self.s.api_check_interval,
                self.s.api_check_timeout,
            );
            let since = now.duration_since(first);
            let more = since.as_nanos() / period.as_nanos().max(1);
            self.failures = u32::try_from(more).unwrap_or(u32::MAX).saturating_add(1);
            self.unreachable_since = Some(first);
        }
    }

    pub fn settings(&self) -> &CheckSettings {
        &self.s
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Consecutive failed API checks.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The boot ID the check works with.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// The last API contact.
    pub fn last_contact(&self) -> Option<Instant> {
        self.last_contact
    }

    /// Whether the self-fence action was carried out (this boot).
    pub fn fenced(&self) -> bool {
        self.fenced
    }

    /// The known peers.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// What the shell persists across agent restarts (same boot).
    pub fn previous(&self) -> Previous {
        Previous {
            boot_id: self.boot_id.clone(),
            last_contact: self.last_contact,
            self_fence_decided: self.decided,
            peers: self.peers.clone(),
        }
    }

    /// When [`SelfCheck::tick`] is due (at the latest).
    pub fn next_wake(&self) -> Instant {
        if !self.startup.is_empty() {
            return self.started;
        }
        match &self.step {
            Step::Idle => self.next_check,
            Step::Probe { deadline } | Step::Ask { deadline, .. } | Step::Fence { deadline } => {
                *deadline
            }
        }
    }

    /// Time passed: start a due check, or give up on a step past its deadline.
    pub fn tick(&mut self, now: Instant) -> Vec<Command> {
        let mut out = std::mem::take(&mut self.startup);
        match &self.step {
            Step::Idle if now >= self.next_check => self.start_check(now, &mut out),
            Step::Probe { deadline } if now >= *deadline => self.probed(now, false, &mut out),
            Step::Ask { deadline, .. } if now >= *deadline => self.answered(now, &mut out),
            Step::Fence { deadline } if now >= *deadline => self.fence_done(now, false, &mut out),
            _ => {}
        }
        out
    }

    /// Something happened.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Command> {
        let mut out = std::mem::take(&mut self.startup);
        match input {
            // Only a response from the API server is contact: kube-runtime
            // emits `Init` before any request, so with a fast-failing
            // network it arrives every second from a node that is cut off.
            Input::ApiResponse | Input::WatchItem { data: true } => self.contact(now),
            Input::WatchItem { data: false } => {}
            Input::OwnRecord(r) => {
                // A record for this boot: check at once (rule 1), do not
                // wait for the next interval.
                let applies = r.valid().is_some_and(|v| {
                    self_fence::own_record_applies(
                        Some(v.phase),
                        v.boot_id.as_deref(),
                        &self.boot_id,
                    )
                    .is_some()
                });
                self.own_record = r;
                if applies && self.step == Step::Idle {
                    self.next_check = self.next_check.min(now);
                    if !self.startup.is_empty() || now >= self.next_check {
                        self.start_check(now, &mut out);
                    }
                }
            }
            Input::BootId(Some(b)) if b != self.boot_id => {
                // A new boot ID means the node rebooted.
                self.boot_id = b;
                self.fenced = false;
                self.decided = false;
                self.advertised = None;
                self.answers.clear();
                self.failures = 0;
                self.unreachable_since = None;
            }
            Input::BootId(_) => {}
            Input::ProbeDone { ok } => {
                if matches!(self.step, Step::Probe { .. }) {
                    self.probed(now, ok, &mut out);
                } else if ok {
                    self.contact(now);
                }
            }
            Input::Advertised { ok } => {
                if let Some((boot, at, _)) = self.advertising.take()
                    && ok
                {
                    self.contact(now);
                    self.advertised = Some((boot, at));
                }
            }
            Input::Peers(peers) => {
                if !self.s.static_peers {
                    self.contact(now);
                }
                self.refreshing = None;
                self.set_peers(now, peers);
            }
            Input::PeersRefreshFailed => self.refreshing = None,
            Input::PeerReply { peer, reply } => {
                let mut done = false;
                if let Step::Ask { waiting, got, .. } = &mut self.step
                    && waiting.remove(&peer)
                {
                    if let Some(r) = reply {
                        got.push((peer, r));
                    }
                    done = waiting.is_empty();
                }
                if done {
                    self.answered(now, &mut out);
                }
            }
            Input::SelfFenceDone { ok } => {
                if matches!(self.step, Step::Fence { .. }) {
                    self.fence_done(now, ok, &mut out);
                }
            }
            Input::KubeletLease { age } => {
                // A renewal older than this clock can express is no news.
                if let Some(at) = now.checked_sub(age)
                    && self.kubelet_renewed.is_none_or(|t| t < at)
                {
                    self.kubelet_renewed = Some(at);
                }
            }
        }
        out
    }

    fn contact(&mut self, at: Instant) {
        self.contacted = true;
        // Never move backwards.
        if self.last_contact.is_none_or(|t| t < at) {
            self.last_contact = Some(at);
        }
    }

    fn start_check(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.started = now;
        self.round = Round::default();
        if self.decided && !self.fenced {
            // An earlier agent of this boot decided: carry it out, feed nothing.
            self.step = Step::Fence {
                deadline: now + self.s.watchdog_timeout,
            };
            out.push(Command::SelfFence {
                description: "an earlier agent of this boot decided to fence this node".into(),
            });
            return;
        }
        // Contact within the last interval: no probe needed.
        let fresh = self
            .last_contact
            .is_some_and(|t| now.saturating_duration_since(t) < self.s.api_check_interval);
        if fresh {
            self.probed(now, true, out);
        } else {
            self.step = Step::Probe {
                deadline: now + self.s.api_check_timeout,
            };
            out.push(Command::Probe {
                timeout: self.s.api_check_timeout,
            });
        }
    }

    fn probed(&mut self, now: Instant, ok: bool, out: &mut Vec<Command>) {
        self.ok = ok;
        if ok {
            // A probe that succeeded is contact; a check skipped for fresh
            // contact is not new contact (a restarted agent's fresh contact
            // may be the persisted one of its predecessor).
            if matches!(self.step, Step::Probe { .. }) {
                self.contact(now);
            }
            self.failures = 0;
            self.unreachable_since = None;
            self.answers.clear();
            self.asked.clear();
        } else {
            self.failures = self.failures.saturating_add(1);
            self.unreachable_since.get_or_insert(now);
        }
        if ok && !self.fenced {
            // Advertise and refresh the peers beside the check, never on its
            // path: a write that hangs must not delay the next probe.
            let started = self.started;
            if self.advertising.as_ref().is_some_and(|(_, _, d)| now >= *d) {
                self.advertising = None;
            }
            if self.refreshing.is_some_and(|d| now >= d) {
                self.refreshing = None;
            }
            let stale = self.advertised.as_ref().is_none_or(|(b, at)| {
                *b != self.boot_id || started.saturating_duration_since(*at) >= READVERTISE
            });
            if stale && self.advertising.is_none() {
                self.advertising = Some((
                    self.boot_id.clone(),
                    started,
                    now + self.s.advertise_timeout(),
                ));
                out.push(Command::Advertise {
                    boot_id: self.boot_id.clone(),
                });
            }
            if self.refreshing.is_none() && self.peers_due.is_none_or(|(due, _)| started >= due) {
                self.refreshing = Some(now + self.s.refresh_timeout());
                out.push(Command::RefreshPeers);
            }
        }
        self.ask(now, out);
    }

    fn set_peers(&mut self, now: Instant, peers: Vec<String>) {
        self.peers = peers;
        let every = if self.s.static_peers {
            PEER_REFRESH
        } else {
            next_peer_refresh(self.peers_due.map(|(_, d)| d))
        };
        self.peers_due = Some((now + every, every));
    }

    fn ask(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.failures > 0 {
            let batch = next_batch(&self.peers, &mut self.cursor);
            if !batch.is_empty() {
                let timeout = self.s.peer_answer_timeout();
                self.step = Step::Ask {
                    deadline: now + timeout,
                    waiting: batch.iter().cloned().collect(),
                    batch: batch.clone(),
                    got: Vec::new(),
                };
                out.push(Command::AskPeers {
                    peers: batch,
                    timeout,
                });
                return;
            }
        }
        self.conclude(now, out);
    }

    fn answered(&mut self, now: Instant, out: &mut Vec<Command>) {
        if let Step::Ask { batch, got, .. } = std::mem::replace(&mut self.step, Step::Idle) {
            self.round = Round {
                asked: batch.len(),
                answered: got.len(),
            };
            // Every peer asked counts, whether it answered or not — stamped,
            // like the answers, with the end of the round: a mark stamped
            // with its start would expire before the answers when the
            // silence timeout is shorter than a round, and the majority of
            // rule 4 would be counted against too few peers.
            for peer in batch {
                self.asked.insert(peer, now);
            }
            for (peer, r) in got {
                let my_phase =
                    self_fence::own_record_applies(r.phase, r.boot_id.as_deref(), &self.boot_id);
                self.answers.insert(
                    peer,
                    (
                        now,
                        PeerAnswer {
                            api_reachable: r.api_reachable,
                            my_phase,
                        },
                    ),
                );
            }
        }
        self.conclude(now, out);
    }

    /// The verdict, taken after the peers answered.
    fn conclude(&mut self, now: Instant, out: &mut Vec<Command>) {
        let silence = self.s.peer_silence_timeout;
        self.answers
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < silence);
        self.asked
            .retain(|_, at| now.saturating_duration_since(*at) < silence);
        let answers: Vec<PeerAnswer> = self.answers.values().map(|(_, a)| *a).collect();
        let own = if self.ok {
            match &self.own_record {
                RecordState::Valid(r) => self_fence::own_record_applies(
                    Some(r.phase),
                    r.boot_id.as_deref(),
                    &self.boot_id,
                ),
                _ => None,
            }
        } else {
            None
        };
        let input = SelfFenceInput {
            api_failures: self.failures,
            own_phase_seen_connected: own,
            known_peers: self.asked.len(),
            answers: &answers,
            unreachable_for: self
                .unreachable_since
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default(),
            kubelet_stale: self.kubelet_stale(now),
            this_check: self.round,
        };
        let verdict = self_fence::verdict(&input, &self.s.self_fence_settings());
        let changed = self
            .last_verdict
            .as_ref()
            .is_none_or(|v| std::mem::discriminant(v) != std::mem::discriminant(&verdict));
        if changed {
            out.push(Command::VerdictChanged(verdict.clone()));
        }
        self.last_verdict = Some(verdict.clone());
        self.verdict = verdict;
        if self.verdict.self_fence() {
            self.decided = true;
            if !self.fenced {
                self.step = Step::Fence {
                    deadline: now + self.s.watchdog_timeout,
                };
                out.push(Command::SelfFence {
                    description: self.verdict.describe(),
                });
                return;
            }
        }
        self.finish(now, out);
    }

    /// Rule 5b's condition: the own kubelet's Lease unrenewed for longer
    /// than `kubelet_stale_after`, or no renewal seen at all.
    fn kubelet_stale(&self, now: Instant) -> Option<self_fence::KubeletStale> {
        let after = self.s.kubelet_stale_after?;
        match self.kubelet_renewed {
            None => Some(self_fence::KubeletStale::NeverSeen),
            Some(t) => {
                let d = now.saturating_duration_since(t);
                (d > after).then_some(self_fence::KubeletStale::For(d))
            }
        }
    }

    fn fence_done(&mut self, now: Instant, ok: bool, out: &mut Vec<Command>) {
        self.fenced = ok;
        self.finish(now, out);
    }

    /// The longest a check may take from its start to its end (each step
    /// gives up at its own deadline): the probe and asking the peers.
    pub fn longest_check(&self) -> Duration {
        safe_time::longest_check(self.s.api_check_timeout)
    }

    /// Schedule the next check, and renew the dead man's switch: the
    /// watchdog may be fed until the next check has had time to end. A
    /// loop that stops (hangs) lets the permit lapse; a check that
    /// decides to self-fence issues none.
    fn finish(&mut self, now: Instant, out: &mut Vec<Command>) {
        let interval = self.s.api_check_interval;
        self.step = Step::Idle;
        self.next_check = if self.failures == 0 {
            // One interval after the last contact (at the latest one
            // interval from now).
            let contact = self.last_contact.unwrap_or(self.started);
            (contact + interval).clamp(now, now + interval)
        } else {
            // The next failing check one interval after this one started
            // (at once when it took longer).
            (self.started + interval).max(now)
        };
        let outage = matches!(self.verdict, Verdict::ControlPlaneOutage { .. });
        if !self.decided && (self.contacted || outage) {
            out.push(Command::PermitFeeding {
                until: self.next_check + self.longest_check(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
