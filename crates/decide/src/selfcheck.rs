//! The agent's check of its own node, as a pure, time-injected state machine.
//!
//! This is the schedule the leader's safe time ([`super::safetime`]) relies
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
//! - **Verdict** from the decision table ([`super::selffence`]), then the
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

use super::selffence::{self, PeerAnswer, SelfFenceInput, SelfFenceSettings, Verdict};
use super::{Phase, RecordState, SelfFenceAction, safetime};

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
    /// Rule 5b of [`super::selffence`]: once the own kubelet's Lease has gone
    /// unrenewed this long (`--unreachable-after`), one failed check with
    /// silent peers is isolation. `None`: never (rules 2 and 5 only).
    pub kubelet_stale_after: Option<Duration>,
}

impl CheckSettings {
    fn selffence(&self) -> SelfFenceSettings {
        SelfFenceSettings {
            api_failure_threshold: self.api_failure_threshold,
            peer_silence_timeout: self.peer_silence_timeout,
        }
    }

    /// How long the agent waits for one peer's answer.
    pub fn peer_answer_timeout(&self) -> Duration {
        safetime::peer_answer_timeout(self.api_check_timeout)
    }

    /// Bound of writing the advertisement (a GET and a PATCH, each bounded
    /// by twice the API check timeout).
    pub fn advertise_timeout(&self) -> Duration {
        safetime::advertise_timeout(self.api_check_timeout)
    }

    /// Bound of one peer refresh (a paged list, each page bounded by twice
    /// the API check timeout; the shell gives up on the first slow page).
    pub fn refresh_timeout(&self) -> Duration {
        safetime::refresh_timeout(self.api_check_timeout)
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
        asked_at: Instant,
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
            let period =
                safetime::failing_check_period(self.s.api_check_interval, self.s.api_check_timeout);
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
                    selffence::own_record_applies(
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
                    asked_at: now,
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
        if let Step::Ask {
            asked_at,
            batch,
            got,
            ..
        } = std::mem::replace(&mut self.step, Step::Idle)
        {
            // Every peer asked counts, whether it answered or not.
            for peer in batch {
                self.asked.insert(peer, asked_at);
            }
            for (peer, r) in got {
                let my_phase =
                    selffence::own_record_applies(r.phase, r.boot_id.as_deref(), &self.boot_id);
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
                RecordState::Valid(r) => selffence::own_record_applies(
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
        };
        let verdict = selffence::verdict(&input, &self.s.selffence());
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
    fn kubelet_stale(&self, now: Instant) -> Option<selffence::KubeletStale> {
        let after = self.s.kubelet_stale_after?;
        match self.kubelet_renewed {
            None => Some(selffence::KubeletStale::NeverSeen),
            Some(t) => {
                let d = now.saturating_duration_since(t);
                (d > after).then_some(selffence::KubeletStale::For(d))
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
        safetime::longest_check(self.s.api_check_timeout)
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
mod tests {
    use super::*;
    use crate::FenceRecord;
    use crate::selffence::Reason;
    use crate::testutil::{mono, wall0};

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn settings() -> CheckSettings {
        CheckSettings {
            api_check_interval: S(5),
            api_check_timeout: S(2),
            api_failure_threshold: 3,
            peer_silence_timeout: S(10),
            action: SelfFenceAction::Watchdog,
            watchdog_timeout: S(10),
            static_peers: false,
            kubelet_stale_after: None,
        }
    }

    fn check() -> SelfCheck {
        SelfCheck::new(settings(), mono(0), Some("b1".into()), None)
    }

    fn peers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    fn probes(cmds: &[Command]) -> usize {
        cmds.iter()
            .filter(|c| matches!(c, Command::Probe { .. }))
            .count()
    }

    fn asked(cmds: &[Command]) -> Option<Vec<String>> {
        cmds.iter().find_map(|c| match c {
            Command::AskPeers { peers, .. } => Some(peers.clone()),
            _ => None,
        })
    }

    fn fences(cmds: &[Command]) -> bool {
        cmds.iter().any(|c| matches!(c, Command::SelfFence { .. }))
    }

    fn permit(cmds: &[Command]) -> Option<Instant> {
        cmds.iter().find_map(|c| match c {
            Command::PermitFeeding { until } => Some(*until),
            _ => None,
        })
    }

    /// Tick at `t`, answering advertisements and peer refreshes at once;
    /// every command issued.
    fn drive(c: &mut SelfCheck, t: Instant, n: usize) -> Vec<Command> {
        let mut all = c.tick(t);
        let mut i = 0;
        while i < all.len() {
            let more = match &all[i] {
                Command::Advertise { .. } => c.handle(t, Input::Advertised { ok: true }),
                Command::RefreshPeers => c.handle(t, Input::Peers(peers(n))),
                _ => Vec::new(),
            };
            all.extend(more);
            i += 1;
        }
        all
    }

    /// A connected agent: contact at 0, advertised, peers known, probed
    /// successfully at 5.
    fn connected(n: usize) -> SelfCheck {
        let mut c = check();
        assert!(c.handle(mono(0), Input::ApiResponse).is_empty());
        // The first check at once.
        assert_eq!(c.next_wake(), mono(0));
        // Advertise and refresh the peers beside the check; fed until the
        // next check (at 5) has had time to end: probe 2 s, peers 3 s.
        let out = c.tick(mono(0));
        assert_eq!(
            out,
            vec![
                Command::Advertise {
                    boot_id: "b1".into()
                },
                Command::RefreshPeers,
                Command::VerdictChanged(Verdict::Healthy),
                Command::PermitFeeding { until: mono(5 + 5) }
            ]
        );
        assert!(c.handle(mono(0), Input::Advertised { ok: true }).is_empty());
        assert!(c.handle(mono(0), Input::Peers(peers(n))).is_empty());
        assert_eq!(c.next_wake(), mono(5));
        // At 5: no contact for an interval: probe; refresh peers (5 s back-off).
        let out = c.tick(mono(5));
        assert_eq!(probes(&out), 1);
        let out = c.handle(mono(5), Input::ProbeDone { ok: true });
        assert_eq!(out[0], Command::RefreshPeers);
        assert_eq!(permit(&out), Some(mono(10 + 5)));
        c.handle(mono(5), Input::Peers(peers(n)));
        assert_eq!(c.next_wake(), mono(10));
        c
    }

    #[test]
    fn contact_within_the_interval_needs_no_probe() {
        let mut c = connected(3);
        // Contact every 4 s: no probe, ever.
        for t in (6..100).step_by(4) {
            c.handle(mono(t), Input::WatchItem { data: true });
            if c.next_wake() <= mono(t + 1) {
                let out = c.tick(c.next_wake());
                assert_eq!(probes(&out), 0, "at {t}: {out:?}");
            }
            // Answer peer refreshes as they come.
            if c.refreshing.is_some() {
                c.handle(mono(t), Input::Peers(peers(3)));
            }
        }
        assert_eq!(c.verdict(), &Verdict::Healthy);
        assert_eq!(c.failures(), 0);
    }

    #[test]
    fn isolated_agent_follows_the_schedule_and_fences() {
        // Last contact at 5 (the probe); nothing answers from then on.
        let mut c = connected(3);
        let mut t = c.next_wake();
        let mut fenced_at = None;
        let mut probe_times = Vec::new();
        while t < mono(60) && fenced_at.is_none() {
            let out = c.tick(t);
            if probes(&out) > 0 {
                probe_times.push(t);
            }
            if let Some(p) = asked(&out) {
                assert_eq!(p, peers(3));
            }
            if fences(&out) {
                fenced_at = Some(t);
            }
            t = c.next_wake();
        }
        // Probes at 10, 15, 20: each probe 2 s + asking 3 s = 5 s.
        assert_eq!(probe_times, vec![mono(10), mono(15), mono(20)]);
        // The first failure ends at 12; the third check ends at 20 + 2 + 3
        // = 25, past the silence of 10 s: i + 2p + t + a after the contact.
        assert_eq!(fenced_at, Some(mono(25)));
        assert!(matches!(
            c.verdict(),
            Verdict::SelfFence(Reason::Isolated { known: 3, .. })
        ));
        assert!(c.previous().self_fence_decided);
        c.handle(mono(30), Input::SelfFenceDone { ok: true });
        assert!(c.fenced());
    }

    /// Run a cut-off agent (nothing answers after the contact at 5) until
    /// it fences or 60 s pass; when it fenced, with which verdict.
    fn run_cut_off(mut c: SelfCheck) -> (Option<Instant>, Verdict) {
        let mut t = c.next_wake();
        let mut fenced_at = None;
        while t < mono(60) && fenced_at.is_none() {
            if fences(&c.tick(t)) {
                fenced_at = Some(t);
            }
            t = c.next_wake();
        }
        (fenced_at, c.verdict().clone())
    }

    /// A connected agent with rule 5b on (`--unreachable-after` 20 s).
    fn connected_5b(n: usize) -> SelfCheck {
        let mut c = connected(n);
        c.s.kubelet_stale_after = Some(S(20));
        c
    }

    #[test]
    fn a_stale_kubelet_fences_after_one_failed_check() {
        // The kubelet renewed at -18 (by the Lease's renewTime, seen at 0):
        // stale for more than 20 s from 2 on. The contact at 5 is the last;
        // the first check fails at 10 + 2, nobody answers by 15: isolated
        // then (rule 5b), not at 25 (rule 5).
        let mut c = connected_5b(3);
        c.handle(mono(0), Input::KubeletLease { age: S(18) });
        let (at, v) = run_cut_off(c);
        assert_eq!(at, Some(mono(15)));
        assert!(
            matches!(
                v,
                Verdict::SelfFence(Reason::IsolatedKubeletStale {
                    answered: 0,
                    known: 3,
                    kubelet: selffence::KubeletStale::For(d)
                }) if d == S(33)
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_kubelet_renewed_recently_leaves_the_full_schedule() {
        // Renewed at 0 (seen at once): not stale before 20, so the checks
        // ending at 15 and 20 follow rules 2 and 5; the one ending at 25 is
        // isolated by either rule.
        let mut c = connected_5b(3);
        c.handle(mono(0), Input::KubeletLease { age: S(0) });
        // A renewal seen late but older than the one known changes nothing.
        c.handle(mono(4), Input::KubeletLease { age: S(30) });
        let (at, _) = run_cut_off(c);
        assert_eq!(at, Some(mono(25)));
        // The same renewal with rule 5b off.
        let mut c = connected(3);
        c.handle(mono(0), Input::KubeletLease { age: S(0) });
        assert_eq!(run_cut_off(c).0, Some(mono(25)));
        // A renewal that stays fresh through the checks (seen at 4, made
        // then), and the threshold well above the schedule: rule 5.
        let mut c = connected_5b(3);
        c.s.kubelet_stale_after = Some(S(100));
        c.handle(mono(4), Input::KubeletLease { age: S(0) });
        let (at, v) = run_cut_off(c);
        assert_eq!(at, Some(mono(25)));
        assert!(
            matches!(v, Verdict::SelfFence(Reason::Isolated { .. })),
            "{v:?}"
        );
    }

    #[test]
    fn no_renewal_seen_counts_as_stale() {
        let (at, v) = run_cut_off(connected_5b(3));
        assert_eq!(at, Some(mono(15)));
        assert!(
            matches!(
                v,
                Verdict::SelfFence(Reason::IsolatedKubeletStale {
                    kubelet: selffence::KubeletStale::NeverSeen,
                    ..
                })
            ),
            "{v:?}"
        );
        // A renewal older than the clock can express is no renewal either.
        let mut c = connected_5b(3);
        c.handle(mono(0), Input::KubeletLease { age: Duration::MAX });
        assert_eq!(run_cut_off(c).0, Some(mono(15)));
    }

    /// Run `c` for 200 s with every peer answering that it cannot reach
    /// the API either; it must never fence.
    fn run_outage(c: &mut SelfCheck) {
        let mut t = c.next_wake();
        while t < mono(200) {
            let out = c.tick(t);
            assert!(!fences(&out), "{out:?}");
            for peer in asked(&out).unwrap_or_default() {
                let reply = PeerReply {
                    api_reachable: false,
                    phase: None,
                    boot_id: None,
                };
                let o = c.handle(
                    t + S(1),
                    Input::PeerReply {
                        peer,
                        reply: Some(reply),
                    },
                );
                assert!(!fences(&o), "{o:?}");
            }
            t = c.next_wake();
        }
    }

    #[test]
    fn a_stale_kubelet_in_an_outage_does_not_fence() {
        // Rule 4 comes before rule 5b, however stale the kubelet.
        let mut c = connected_5b(3);
        run_outage(&mut c);
        assert!(matches!(c.verdict(), Verdict::ControlPlaneOutage { .. }));
    }

    #[test]
    fn peers_that_cannot_reach_the_api_mean_an_outage() {
        let mut c = connected(3);
        run_outage(&mut c);
        assert!(matches!(c.verdict(), Verdict::ControlPlaneOutage { .. }));
        assert!(c.failures() > 3);
    }

    #[test]
    fn a_peer_reporting_my_record_fences_at_the_first_failure() {
        let mut c = connected(3);
        let mut t = c.next_wake();
        let mut fenced_at = None;
        while t < mono(60) && fenced_at.is_none() {
            let out = c.tick(t);
            if let Some(p) = asked(&out) {
                for peer in p {
                    let reply = PeerReply {
                        api_reachable: true,
                        phase: Some(Phase::Fencing),
                        boot_id: Some("b1".into()),
                    };
                    let o = c.handle(
                        t,
                        Input::PeerReply {
                            peer,
                            reply: Some(reply),
                        },
                    );
                    if fences(&o) {
                        fenced_at = Some(t);
                    }
                }
            }
            t = c.next_wake();
        }
        // Rule 3 from the first failed check (ending at 12) on.
        assert_eq!(fenced_at, Some(mono(12)));
        // A record of another boot is satisfied already.
        let mut c = connected(3);
        let mut t = c.next_wake();
        while t < mono(25) {
            let out = c.tick(t);
            if let Some(p) = asked(&out) {
                for peer in p {
                    let reply = PeerReply {
                        api_reachable: true,
                        phase: Some(Phase::Fenced),
                        boot_id: Some("b0".into()),
                    };
                    let o = c.handle(
                        t,
                        Input::PeerReply {
                            peer,
                            reply: Some(reply),
                        },
                    );
                    assert!(!fences(&o));
                }
            }
            t = c.next_wake();
        }
    }

    fn record(phase: Phase, boot: &str) -> RecordState {
        RecordState::Valid(FenceRecord {
            phase,
            fencing_since: wall0(),
            fenced_at: None,
            cordoned: true,
            tainted: false,
            by: "leader".into(),
            held_since: None,
            boot_id: Some(boot.into()),
        })
    }

    #[test]
    fn own_record_while_connected_fences_at_once() {
        let mut c = connected(3);
        c.handle(mono(6), Input::WatchItem { data: true });
        // The record arrives: a check at once (contact is fresh: no probe).
        let out = c.handle(mono(7), Input::OwnRecord(record(Phase::Fencing, "b1")));
        assert_eq!(probes(&out), 0);
        assert!(fences(&out), "{out:?}");
        // Deciding to fence ends the permits.
        assert_eq!(permit(&out), None);
        assert_eq!(
            permit(&c.handle(mono(10), Input::SelfFenceDone { ok: true })),
            None
        );
        // A record of an earlier boot does not.
        let mut c = connected(3);
        c.handle(mono(7), Input::OwnRecord(record(Phase::Fenced, "b0")));
        c.handle(mono(8), Input::WatchItem { data: true });
        assert!(!fences(&drive(&mut c, mono(10), 3)));
    }

    #[test]
    fn a_new_boot_id_resets_and_readvertises() {
        let mut c = connected(3);
        c.handle(mono(6), Input::WatchItem { data: true });
        assert!(fences(&c.handle(
            mono(7),
            Input::OwnRecord(record(Phase::Fencing, "b1"))
        )));
        c.handle(mono(10), Input::SelfFenceDone { ok: true });
        assert!(c.fenced());
        // Unreadable: not a reboot.
        c.handle(mono(11), Input::BootId(None));
        assert!(c.fenced());
        c.handle(mono(11), Input::BootId(Some("b2".into())));
        assert!(!c.fenced());
        c.handle(mono(12), Input::WatchItem { data: true });
        let out = c.tick(c.next_wake());
        assert_eq!(
            out[0],
            Command::Advertise {
                boot_id: "b2".into()
            }
        );
    }

    #[test]
    fn unanswered_steps_fail_at_their_deadline() {
        let mut c = connected(3);
        // Probe never answered: failure at 10 + 2; peers asked then.
        assert_eq!(probes(&c.tick(mono(10))), 1);
        assert_eq!(c.next_wake(), mono(12));
        let out = c.tick(mono(12));
        assert_eq!(c.failures(), 1);
        assert_eq!(asked(&out), Some(peers(3)));
        // Peers never answer: verdict at 12 + 3.
        assert_eq!(c.next_wake(), mono(15));
        let out = c.tick(mono(15));
        // Fed until the next failing check (at 15) has had time to end.
        assert_eq!(out, vec![Command::PermitFeeding { until: mono(20) }]);
        assert_eq!(c.verdict(), &Verdict::Healthy);
        // Next check at 10 + 5 (started + interval).
        assert_eq!(c.next_wake(), mono(15));
    }

    #[test]
    fn peers_refresh_on_their_back_off() {
        let mut c = connected(3);
        let mut refreshes = vec![0, 5];
        let mut t = mono(5);
        while t < mono(700) {
            c.handle(t, Input::WatchItem { data: true });
            let wake = c.next_wake();
            if wake <= t + S(4) {
                let out = c.tick(wake);
                if out.contains(&Command::RefreshPeers) {
                    refreshes.push(wake.duration_since(mono(0)).as_secs());
                    c.handle(wake, Input::Peers(peers(3)));
                }
                if out.iter().any(|c| matches!(c, Command::Advertise { .. })) {
                    c.handle(wake, Input::Advertised { ok: true });
                    let out = c.tick(wake);
                    assert!(out.is_empty());
                }
            }
            t += S(4);
        }
        // First refresh at 5; then +5, +10, +20, +40, +80, +160, +300 (on
        // the check schedule, which runs every 5 s with contact every 4 s).
        let gaps: Vec<u64> = refreshes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 6, "{refreshes:?}");
        for (g, want) in gaps.iter().zip([5, 10, 20, 40, 80, 160, 300]) {
            assert!(*g >= want && *g < want + 5, "{refreshes:?}");
        }
    }

    #[test]
    fn peers_that_do_not_answer_count_as_asked() {
        // Two of three peers answer "no API" and one is silent: a majority
        // of the three answered, so this is an outage (rule 4), not an
        // isolation of a node that knows no peers.
        let mut c = connected(3);
        let mut t = c.next_wake();
        while t < mono(120) {
            let out = c.tick(t);
            assert!(!fences(&out), "{:?}", c.verdict());
            for peer in asked(&out).unwrap_or_default() {
                let reply = (peer != "p2").then_some(PeerReply {
                    api_reachable: false,
                    phase: None,
                    boot_id: None,
                });
                let o = c.handle(t, Input::PeerReply { peer, reply });
                assert!(!fences(&o), "{:?}", c.verdict());
            }
            t = c.next_wake();
        }
        assert_eq!(
            c.verdict(),
            &Verdict::ControlPlaneOutage {
                unreachable: 2,
                answered: 2
            }
        );
        // All three silent: isolated, out of three known peers.
        let mut c = connected(3);
        let mut t = c.next_wake();
        while !c.verdict().self_fence() && t < mono(60) {
            let out = c.tick(t);
            for peer in asked(&out).unwrap_or_default() {
                c.handle(t, Input::PeerReply { peer, reply: None });
            }
            t = c.next_wake();
        }
        assert!(matches!(
            c.verdict(),
            Verdict::SelfFence(Reason::Isolated { known: 3, .. })
        ));
    }

    #[test]
    fn a_hanging_advertisement_does_not_delay_the_first_probe() {
        // The advertisement is due again (READVERTISE) at the check right
        // before the cut, and its write hangs: the probe still comes one
        // interval after the last contact, and fails on time.
        let mut c = connected(3);
        let t0 = mono(5) + READVERTISE;
        c.handle(t0, Input::WatchItem { data: true });
        let out = c.tick(c.next_wake().max(t0));
        assert!(
            out.iter().any(|c| matches!(c, Command::Advertise { .. })),
            "{out:?}"
        );
        // Never answered. The next check: no contact since t0.
        assert_eq!(c.next_wake(), t0 + S(5));
        let out = c.tick(t0 + S(5));
        assert_eq!(probes(&out), 1);
        c.tick(t0 + S(7));
        assert_eq!(c.failures(), 1);
    }

    #[test]
    fn a_hung_loop_lets_the_permit_lapse() {
        // Connected, contact every 4 s: every completed check renews the
        // permit to at most the end of the next one (interval + longest
        // check = 5 + 5 s). When the loop stops, feeding ends by then.
        let mut c = connected(3);
        let mut last = None;
        let mut t = mono(6);
        while t < mono(60) {
            c.handle(t, Input::WatchItem { data: true });
            while c.next_wake() <= t + S(4) {
                let wake = c.next_wake();
                let out = drive(&mut c, wake, 3);
                if let Some(until) = permit(&out) {
                    assert!(until <= wake + S(10), "{until:?} at {wake:?}");
                    assert!(
                        until > c.next_wake(),
                        "the next check must end before the permit"
                    );
                    last = Some(until);
                }
            }
            t += S(4);
        }
        let last = last.expect("permits were issued");
        // The loop hangs at 60: nothing is fed after the last permit.
        assert!(last <= mono(60) + S(10));
    }

    fn previous(contact: u64, decided: bool) -> Previous {
        Previous {
            boot_id: "b1".into(),
            last_contact: Some(mono(contact)),
            self_fence_decided: decided,
            peers: peers(3),
        }
    }

    #[test]
    fn a_restarted_agent_cut_off_feeds_nothing_and_fences_at_once() {
        // Last contact at 0, restarted at 30: the failure run goes on from
        // there (first failure at 0 + 5 + 2), so the first check, failing
        // with its peers silent, is the verdict; nothing was fed.
        let mut c = SelfCheck::new(
            settings(),
            mono(30),
            Some("b1".into()),
            Some(previous(0, false)),
        );
        assert_eq!(c.failures(), 5);
        let mut all = c.tick(mono(30));
        assert_eq!(probes(&all), 1);
        let out = c.handle(mono(32), Input::ProbeDone { ok: false });
        assert_eq!(asked(&out), Some(peers(3)));
        all.extend(out.clone());
        for peer in peers(3) {
            all.extend(c.handle(mono(35), Input::PeerReply { peer, reply: None }));
        }
        assert!(fences(&all), "{all:?}");
        assert_eq!(permit(&all), None);
        assert!(matches!(
            c.verdict(),
            Verdict::SelfFence(Reason::Isolated { known: 3, .. })
        ));
    }

    #[test]
    fn a_restarted_agent_feeds_after_contact_or_an_outage_verdict() {
        // Contact: fed.
        let mut c = SelfCheck::new(
            settings(),
            mono(30),
            Some("b1".into()),
            Some(previous(0, false)),
        );
        assert_eq!(probes(&c.tick(mono(30))), 1);
        let out = c.handle(mono(30), Input::ProbeDone { ok: true });
        assert!(permit(&out).is_some(), "{out:?}");
        // Peers that cannot reach the API either: an outage, fed.
        let mut c = SelfCheck::new(
            settings(),
            mono(30),
            Some("b1".into()),
            Some(previous(0, false)),
        );
        c.tick(mono(30));
        let mut all = c.handle(mono(32), Input::ProbeDone { ok: false });
        for peer in peers(3) {
            let reply = Some(PeerReply {
                api_reachable: false,
                phase: None,
                boot_id: None,
            });
            all.extend(c.handle(mono(33), Input::PeerReply { peer, reply }));
        }
        assert!(matches!(c.verdict(), Verdict::ControlPlaneOutage { .. }));
        assert!(permit(&all).is_some(), "{all:?}");
        // Restarted soon after the last contact: not yet failing, and not
        // fed before contact either.
        let mut c = SelfCheck::new(
            settings(),
            mono(3),
            Some("b1".into()),
            Some(previous(0, false)),
        );
        assert_eq!(c.failures(), 0);
        let mut all = c.tick(mono(3));
        all.extend(c.handle(mono(5), Input::ProbeDone { ok: false }));
        for peer in peers(3) {
            all.extend(c.handle(mono(8), Input::PeerReply { peer, reply: None }));
        }
        assert_eq!(permit(&all), None, "{all:?}");
    }

    #[test]
    fn a_decision_survives_a_restart() {
        let mut c = SelfCheck::new(
            settings(),
            mono(30),
            Some("b1".into()),
            Some(previous(0, true)),
        );
        let out = c.tick(mono(30));
        assert!(fences(&out));
        assert_eq!(permit(&out), None);
        // A record of another boot is not resumed.
        let mut p = previous(0, true);
        p.boot_id = "b0".into();
        let mut c = SelfCheck::new(settings(), mono(30), Some("b1".into()), Some(p));
        assert_eq!(c.failures(), 0);
        assert!(!fences(&c.tick(mono(30))));
    }

    #[test]
    fn batches_rotate_through_every_peer() {
        let peers = peers(70);
        let mut cursor = 0;
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let b = next_batch(&peers, &mut cursor);
            assert_eq!(b.len(), PEER_BATCH);
            seen.extend(b);
        }
        assert_eq!(seen.len(), 70);
        assert!(next_batch(&[], &mut cursor).is_empty());
    }

    #[test]
    fn a_fast_failing_network_is_no_contact() {
        // The watches restart every second (an Init item each time) while
        // every request fails at once: the agent probes, and with its peers
        // silent it fences itself on the isolation schedule.
        let mut c = connected(3);
        let mut t = mono(6);
        let mut fenced_at = None;
        while t < mono(60) && fenced_at.is_none() {
            let out = c.handle(t, Input::WatchItem { data: false });
            assert!(!fences(&out));
            while c.next_wake() <= t + S(1) && fenced_at.is_none() {
                let wake = c.next_wake().max(t);
                let out = c.tick(wake);
                if probes(&out) > 0 {
                    let o = c.handle(wake, Input::ProbeDone { ok: false });
                    for peer in asked(&o).unwrap_or_default() {
                        if fences(&c.handle(wake, Input::PeerReply { peer, reply: None })) {
                            fenced_at = Some(wake);
                        }
                    }
                }
                if fences(&out) {
                    fenced_at = Some(wake);
                }
            }
            t += S(1);
        }
        // Last contact at 5: failures at 10, 15, 20, the third past the silence.
        assert_eq!(fenced_at, Some(mono(20)), "{:?}", c.verdict());
    }
}
