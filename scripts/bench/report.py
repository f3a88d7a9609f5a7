"""The table `make bench` prints, and the issue's goals checked against it.

Every row is a dict with a name, a kind (peak, train, tracker, monitor, data) and
the numbers that apply to its kind; a number that does not apply is shown
as a dash and is absent (or None) in the JSON.
"""

COLUMNS = (  # (header, row key, format)
    ("ms/iter", "ms_per_iter", "{:,.1f}"),
    ("tokens/s", "tokens_per_sec", "{:,.0f}"),
    ("GFLOP/s", "gflops", "{:,.1f}"),
    ("MFU", "mfu", "{:.1%}"),
    ("peak MB", "peak_memory_mb", "{:,.0f}"),
    ("MB/s", "mb_per_sec", "{:.1f}"),
)
# Which numbers each kind of row has (tests/test_bench.py checks them all).
ROW_NUMBERS = {
    "peak": ("gflops",),
    "train": ("ms_per_iter", "tokens_per_sec", "gflops", "mfu", "peak_memory_mb"),
    "tracker": ("ms_per_iter", "tokens_per_sec", "gflops", "mfu", "peak_memory_mb", "ratio", "log_share"),
    "data": ("tokens_per_sec", "mb_per_sec"),
    "monitor": ("ms_per_iter", "share"),
}

# The goals of issue 5.
CPU_MFU_GOAL = 0.80
TRACKER_OVERHEAD_GOAL = 0.01
DATA_SPEEDUP_GOAL = 1.8
# Issue 11: each health number under 1% of the step, text samples under 2% of the run.
MONITOR_GOAL = 0.01
SAMPLE_GOAL = 0.02
GPU_MFU_GOAL = 0.45


def _cell(row, key, fmt):
    value = row.get(key)
    return "—" if value is None else fmt.format(value)


def format_table(rows):
    """Markdown table: one line per row, every column of COLUMNS."""
    header = ["measurement", *(title for title, _, _ in COLUMNS), "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * len(COLUMNS), "---"]) + "|"]
    for row in rows:
        cells = [row["name"], *(_cell(row, key, fmt) for _, key, fmt in COLUMNS), row.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_header(report):
    m = report["machine"]
    where = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['blas']}), {m['threads']} threads"
    if m.get("gpu"):
        where += f", GPU {m['gpu']}"
    load = " / ".join(
        " ".join(f"{x:.2f}" for x in loads) for loads in (m.get("load_average"), m.get("load_average_end")) if loads
    )
    return (
        f"gpt2lab bench ({report['mode']}) | {where} | {m['date']} | {report['command']}"
        + (f" | load average at start / end: {load}" if load else "")
    )


def format_goals(goals):
    marks = {True: "met", False: "NOT met", None: "not measured"}
    return "\n".join(f"- [{marks[g['met']]}] {g['goal']}: {g['measured']}" for g in goals)


def format_report(report):
    return "\n".join(
        [format_header(report), "", format_table(report["rows"]), "", "goals:", format_goals(report["goals"])]
    )


# ----------------------------------------------------------------------------
# Goals


def _row(rows, name):
    return next((row for row in rows if row["name"] == name), None)


def _mfu_goal(rows, name, threshold, what):
    row = _row(rows, name)
    goal = f"{what}: at least {threshold:.0%} MFU"
    if row is None:
        return {"goal": goal, "measured": f"not run ({name} is not in this mode/device)", "met": None}
    if row.get("mfu") is None:  # it ran, on a GPU without a known peak (gpt2/run/mfu.py)
        measured = (f"ran ({row['ms_per_iter']:.1f} ms/iter, {row['tokens_per_sec']:,.0f} tokens/s); MFU unknown: "
                    "no peak for this GPU in gpt2/run/mfu.py")
        return {"goal": goal, "measured": measured, "met": None}
    return {"goal": goal, "measured": f"{row['mfu']:.1%} ({row['ms_per_iter']:.1f} ms/iter)", "met": row["mfu"] >= threshold}


def _tracker_goals(rows):
    none = next(row for row in rows if row["kind"] == "tracker" and row["name"].startswith("tracker none"))
    goals = []
    for row in rows:
        if row["kind"] != "tracker" or row is none:
            continue
        overhead = row["ratio"] - 1
        goals.append(
            {
                "goal": f"{row['name']} overhead at most {TRACKER_OVERHEAD_GOAL:.0%} of step time",
                "measured": f"{overhead:+.2%} ms/iter vs none (noise: two none runs differ by "
                f"{none['noise']:.1%}); {row['log_share']:.3%} of step time inside log()",
                "met": overhead <= TRACKER_OVERHEAD_GOAL,
            }
        )
    return goals


def _monitor_goals(rows):
    goals = []
    for row in rows:
        if row["kind"] != "monitor":
            continue
        limit = SAMPLE_GOAL if row["name"].endswith("samples") else MONITOR_GOAL
        goals.append({"goal": f"{row['name'][len('monitor: '):]} at most {limit:.0%} of the step time when on",
                      "measured": f"{row['share']:.3%} ({row['ms_per_iter']:.4f} ms per step)",
                      "met": row["share"] <= limit})
    return goals


def _data_goal(rows):
    parallel = next((row for row in rows if row["kind"] == "data" and row["workers"] > 1), None)
    goal = f"data preparation at least {DATA_SPEEDUP_GOAL}x a single-process encode"
    if parallel is None:
        return {"goal": goal, "measured": "not measured (one core only)", "met": None}
    return {
        "goal": goal,
        "measured": f"{parallel['speedup']:.2f}x on {parallel['workers']} processes ({parallel['mb_per_sec']:.1f} MB/s)",
        "met": parallel["speedup"] >= DATA_SPEEDUP_GOAL,
    }


def evaluate_goals(rows, quick=False):
    """The issue's goals, each with what this run measured (met: None when
    this mode or machine does not measure it).  The quick mode's sizes are
    not the goals' sizes: it shows its numbers but judges none."""
    goals = [
        _mfu_goal(rows, "cpu-small", CPU_MFU_GOAL, "CPU small config (4L 4H 256d, block 128, batch 8, fp32)"),
        *_tracker_goals(rows),
        *_monitor_goals(rows),
        _data_goal(rows),
        _mfu_goal(rows, "gpu-gpt2-124M", GPU_MFU_GOAL, "GPU (an H100 in the issue): GPT-2 124M, bf16, compiled"),
    ]
    if quick:
        for goal in goals:
            if goal["met"] is not None:
                goal["met"] = None
                goal["measured"] += " (quick mode: tiny sizes, not judged)"
    return goals
