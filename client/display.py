"""Where the stream client's text goes as it arrives: inline, whole blocks, or blocks redrawn in place."""
from __future__ import annotations

import shutil
import sys

from client.report import header


class Inline:
    """One prompt: the question, then each piece the moment it arrives."""

    def __init__(self, prompts: list[str], out=sys.stdout):
        self.out = out
        print(header(prompts, 0), file=out, flush=True)

    def text(self, index: int, piece: str) -> None:
        self.out.write(piece)
        self.out.flush()

    def finished(self, index: int) -> None:
        pass

    def close(self) -> None:
        print("\n", file=self.out, flush=True)


class Blocks:
    """Several prompts, output not a terminal: each prompt's whole block when it finishes (unfinished ones at the end)."""

    def __init__(self, prompts: list[str], out=sys.stdout):
        self.prompts = prompts
        self.out = out
        self.texts = [""] * len(prompts)
        self.printed: set[int] = set()

    def text(self, index: int, piece: str) -> None:
        self.texts[index] += piece

    def finished(self, index: int, note: str = "") -> None:
        print(f"{header(self.prompts, index)}{note}\n{self.texts[index]}\n", file=self.out, flush=True)
        self.printed.add(index)

    def close(self) -> None:
        for i in range(len(self.prompts)):
            if i not in self.printed:
                self.finished(i, " (unfinished)")


class Live:
    """Several prompts on a terminal: one block per prompt, redrawn in place as text arrives.

    While streaming each block shows its newest lines so that all blocks fit the screen; at the end the
    whole blocks are printed once.
    """

    REDRAW_SECONDS = 0.05

    def __init__(self, prompts: list[str], out=sys.stdout, clock=None):
        import time

        self.prompts = prompts
        self.out = out
        self.texts = [""] * len(prompts)
        self.drawn_rows = 0
        self.clock = clock or time.monotonic
        self.last_draw = 0.0
        self._draw()

    def text(self, index: int, piece: str) -> None:
        self.texts[index] += piece
        if self.clock() - self.last_draw >= self.REDRAW_SECONDS:
            self._draw()

    def finished(self, index: int) -> None:
        self._draw()

    def close(self) -> None:
        self._draw(full=True)

    def _draw(self, full: bool = False) -> None:
        width, height = shutil.get_terminal_size()
        width = max(width - 1, 10)  # never write into the last column: terminals wrap differently there
        per_block = max(2, (height - 1) // len(self.prompts))
        rows: list[str] = []
        for i, text in enumerate(self.texts):
            body = wrap(text, width)
            if not full:
                body = body[-(per_block - 1):]
            rows += wrap(header(self.prompts, i), width)[:1 if not full else None] + body + ([""] if full else [])
        erase = f"\x1b[{self.drawn_rows}A\r\x1b[J" if self.drawn_rows else ""
        self.out.write(erase + "".join(row + "\n" for row in rows))
        self.out.flush()
        self.drawn_rows = 0 if full else len(rows)
        self.last_draw = self.clock()


def wrap(text: str, width: int) -> list[str]:
    """Screen rows of `text` at `width` columns (hard wrap, as the terminal does)."""
    rows = []
    for line in text.split("\n"):
        rows += [line[i:i + width] for i in range(0, len(line), width)] or [""]
    return rows


def make(prompts: list[str], out=sys.stdout):
    if len(prompts) == 1:
        return Inline(prompts, out)
    return Live(prompts, out) if out.isatty() else Blocks(prompts, out)
