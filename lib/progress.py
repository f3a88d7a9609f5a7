"""Progress of a long loop on a terminal: `make sample --max-new-tokens 100000`.

    progress = Progress(total=100000, batch=3, stream=sys.stderr)
    for n in range(1, total + 1):
        ...
        progress.update(n)
    progress.close()

Nothing is shown during the first DELAY seconds, so a quick run prints
nothing extra.  After that, on a terminal, one line is rewritten in place
(at most 10 times a second) and cleared at the end:

    sampling: 5120/100000 tokens, 1,812 tokens/s, 2 min 37 s left

Written to a file or a pipe (a log), the same text is one whole line every
LOG_EVERY seconds and once at the end, never a carriage return.  It only
reads the clock: what is being computed cannot change.
"""

import time

DELAY = 2.0  # seconds before anything is shown
REDRAW = 0.1  # seconds between in-place redraws on a terminal
LOG_EVERY = 10.0  # seconds between lines in a log
CLEAR = "\r\033[K"  # back to the start of the line, erase it


class Progress:
    """`done` of `total` steps, each producing `batch` items (`unit`);
    `note(done)`, when given, adds its text to each line (a score so far)."""

    def __init__(self, total, *, batch=1, stream, clock=time.perf_counter, label="sampling", unit="tokens",
                 note=None):
        self.total, self.batch, self.stream, self.clock, self.label = total, batch, stream, clock, label
        self.unit, self.note = unit, note
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start = clock()
        self.shown_at = None  # clock when a line was last written
        self.drawn = False  # a line is on the terminal, to clear at the end

    def update(self, done):
        now = self.clock()
        elapsed = now - self.start
        if elapsed < DELAY:
            return
        every = REDRAW if self.tty else LOG_EVERY
        if self.shown_at is not None and now - self.shown_at < every and done < self.total:
            return
        self.shown_at = now
        line = self.line(done, elapsed)
        if self.tty:
            self.stream.write(CLEAR + line)
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, done, elapsed):
        rate = done * self.batch / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) * elapsed / done if done else 0.0
        speed = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"  # 0.84 items/s, not 1
        line = f"{self.label}: {done}/{self.total} {self.unit}, {speed} {self.unit}/s, {_duration(left)} left"
        return line + (f", {self.note(done)}" if self.note else "")

    def close(self):
        """Clear the in-place line (a terminal), so what follows starts clean."""
        if self.drawn:
            self.stream.write(CLEAR)
            self.stream.flush()
            self.drawn = False


def _duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
