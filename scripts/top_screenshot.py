"""Make docs/img/pyvs-top.png: `pyvs top` of a real lab run, as a terminal shows it.

A NAT lab (3 real servers), `pyvs run`, a wrr TCP service and a UDP service, steady
request streams from the client and a burst of malformed datagrams (a drop reason);
`pyvs top` runs in a 150x34 tmux terminal inside the director's namespace, and its
screen (capture-pane -e, with colours) is drawn cell by cell with Pillow in DejaVu
Sans Mono.  Needs root, tmux and Pillow (the `bench` extra).

    .venv/bin/python scripts/top_screenshot.py [--out docs/img/pyvs-top.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rich.text import Text

from pyvs.engine.lab import NatLab
from pyvs.engine.lab.tmux import TmuxPane
from pyvs.engine.runner import DirectorProcess

ROOT = Path(__file__).resolve().parent.parent
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = (150, 34)
BACKGROUND, FOREGROUND = (30, 30, 30), (220, 220, 220)


def render_png(ansi: str, out: Path, font_size: int = 16) -> None:
    """Draw the captured screen: every character in its cell, with its colours."""
    from PIL import Image, ImageDraw, ImageFont

    regular = ImageFont.truetype(FONT, font_size)
    bold = ImageFont.truetype(FONT_BOLD, font_size)
    cell_w = round(regular.getlength("M"))
    cell_h = round(font_size * 1.3)
    lines = ansi.rstrip("\n").split("\n")
    while lines and not Text.from_ansi(lines[-1]).plain.strip():
        lines.pop()  # the terminal's unused rows
    lines.append("")
    width, height = SIZE[0] * cell_w + 24, len(lines) * cell_h + 24
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        text = Text.from_ansi(line)
        styles = [None] * len(text.plain)
        for span in text.spans:
            for i in range(span.start, min(span.end, len(styles))):
                styles[i] = span.style if styles[i] is None else styles[i] + span.style
        y = 12 + row * cell_h
        for col, ch in enumerate(text.plain):
            style = styles[col]
            fg, bg, font = FOREGROUND, None, regular
            if style is not None and not isinstance(style, str):
                if style.color is not None and not style.color.is_default:
                    fg = tuple(style.color.get_truecolor())
                if style.bgcolor is not None and not style.bgcolor.is_default:
                    bg = tuple(style.bgcolor.get_truecolor())
                if style.reverse:
                    fg, bg = bg or BACKGROUND, fg
                if style.dim:
                    fg = tuple(int(c * 0.6) for c in fg)
                if style.bold:
                    font = bold
            x = 12 + col * cell_w
            if bg is not None:
                draw.rectangle([x, y, x + cell_w, y + cell_h], fill=bg)
            if ch != " ":
                draw.text((x, y + 2), ch, font=font, fill=tuple(fg))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/pyvs-top.png")
    parser.add_argument("--text", type=Path, help="also write the plain screen here")
    args = parser.parse_args()
    lab = NatLab(real_servers=3, clients=1, start_servers=True)
    streams: list[subprocess.Popen] = []
    try:
        lab.up()
        with DirectorProcess(lab.ns("director")) as director:
            vip = lab.VIP
            director.adm("-A", "-t", f"{vip}:80", "-s", "wrr")
            director.adm("-A", "-u", f"{vip}:53", "-s", "rr")
            for rs, weight in zip(lab.real_server_list(), (3, 2, 1), strict=True):
                director.adm("-a", "-t", f"{vip}:80", "-r", f"{rs['addr']}:80", "-m",
                             "-w", str(weight))
                director.adm("-a", "-u", f"{vip}:53", "-r", f"{rs['addr']}:53", "-m")
            for url, rate in ((lab.url(), 60), (f"udp://{vip}:53", 20)):
                streams.append(lab.popen("client", [
                    sys.executable, "-m", "pyvs.engine.lab.stream", url, "--rate", str(rate),
                    "--duration", "30", "--timeout", "1", "--out", "/dev/null"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT)))
            junk = ("from scapy.all import IP, UDP, Raw, send\n"
                    f"send(IP(dst='{vip}')/UDP(dport=53, len=200)/Raw(b'x' * 10), count=40,"
                    " verbose=0)\n")
            lab.run("client", [sys.executable, "-c", junk], check=True, timeout=60,
                    capture_output=True)
            with TmuxPane(["ip", "netns", "exec", lab.ns("director"), sys.executable, "-m",
                           "pyvs.engine.cli", "top"], *SIZE) as top:
                time.sleep(12)  # the estimator's rates settle over a few 2 s samples
                screen = top.screen(ansi=True)
                if args.text:
                    args.text.write_text(top.screen())
                top.keys("q")
        render_png(screen, args.out)
        print(f"wrote {args.out}")
    finally:
        for proc in streams:
            proc.terminate()
            proc.wait(10)
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
