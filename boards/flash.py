# SPDX-License-Identifier: BSD-2-Clause
"""``espnic flash``: load a bitstream into a board with openFPGALoader (any board
here) or iceprog (iCE40 boards), whichever is installed.

By default the bitstream goes into the FPGA's configuration RAM (gone at power
off: the safe choice while trying a build); ``persistent=True`` writes the
board's SPI flash instead. Neither tool comes from PyPI: a missing tool, a
missing bitstream and a missing or busy board each give a one-line error that
says what to do.
"""

import shutil
import subprocess
from pathlib import Path

from .board import board as find_board

__all__ = ["FlashError", "TOOLS", "flash_command", "flash"]

TOOLS = ("openFPGALoader", "iceprog")


class FlashError(RuntimeError):
    pass


def _default_bitstream(b) -> Path:
    return Path("build") / f"{b.name}-espnic" / f"top.{b.bitstream_ext}"


def flash_command(board_name: str, *, bitstream=None, tool: str | None = None,
                  persistent: bool = False) -> list[str]:
    """The command that programs the board (the tool found on PATH)."""
    try:
        b = find_board(board_name)
    except ValueError as error:
        raise FlashError(str(error)) from None
    path = Path(bitstream) if bitstream else _default_bitstream(b)
    if not path.is_file():
        raise FlashError(f"no bitstream at {path}: run `espnic build --board {b.name}` first "
                         f"or give --bitstream")
    if tool is not None and tool not in TOOLS:
        raise FlashError(f"tool must be one of {', '.join(TOOLS)}, not {tool!r}")
    usable = [t for t in TOOLS if t == "openFPGALoader" and b.openfpgaloader
              or t == "iceprog" and b.iceprog]
    candidates = [tool] if tool else usable
    if tool and tool not in usable:
        raise FlashError(f"{tool} cannot program the {b.title}; use {' or '.join(usable)}")
    for name in candidates:
        found = shutil.which(name)
        if found is None:
            continue
        if name == "openFPGALoader":
            return [found, "-b", b.openfpgaloader, *(["-f"] if persistent else []), str(path)]
        return [found, *([] if persistent else ["-S"]), str(path)]
    hints = {"openFPGALoader": "openFPGALoader (Debian: apt install openfpgaloader)",
             "iceprog": "iceprog (Debian: apt install fpga-icestorm)"}
    raise FlashError(f"no programmer for the {b.title} found on PATH: install "
                     + " or ".join(hints[t] for t in candidates))


def flash(board_name: str, *, bitstream=None, tool: str | None = None,
          persistent: bool = False, progress=print) -> list[str]:
    """Program the board; returns the command run. FlashError if it failed."""
    command = flash_command(board_name, bitstream=bitstream, tool=tool, persistent=persistent)
    progress("running: " + " ".join(command))
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    for line in done.stdout.splitlines():
        progress(line)
    if done.returncode != 0:
        last = next((line for line in reversed(done.stdout.splitlines()) if line.strip()),
                    "no output")
        raise FlashError(f"{Path(command[0]).name} failed (exit code {done.returncode}): "
                         f"{last.strip()} -- is the board plugged in, and may this user open "
                         f"its USB device?")
    return command
