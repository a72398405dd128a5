"""The time-to-recovery chart of docs/benchmarks/: one dot per run, the
median as a bar, the target as a dashed line, per configuration profile.
Drawn with matplotlib (bench/requirements.txt, installed by bench/run.sh)."""

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402


def ttr_chart(rows, path):
    """rows: [(label, [ttr seconds...], p50, target or None)]. Writes a PNG;
    False when there is nothing to draw."""
    rows = [r for r in rows if r[1]]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.8 * len(rows)), dpi=100)
    for i, (label, values, p50, target) in enumerate(rows):
        y = len(rows) - 1 - i
        jitter = [y + ((j % 3) - 1) * 0.08 for j in range(len(values))]
        ax.scatter(sorted(values), jitter, s=28, color="tab:blue", zorder=3,
                   label="run" if i == 0 else None)
        if p50 is not None:
            ax.vlines(p50, y - 0.3, y + 0.3, color="tab:green", linewidth=3, zorder=4,
                      label="p50" if i == 0 else None)
        if target:
            ax.vlines(target, y - 0.4, y + 0.4, color="tab:red", linestyles="dashed",
                      linewidth=1.5, label="p50 target" if i == 0 else None)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds from power-off to the replica running elsewhere")
    ax.set_title("kube-fencer time to recovery")
    ax.grid(axis="x", color="0.85", zorder=0)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
