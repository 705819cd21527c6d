"""CLI start-up: `kvctl --help` and `kvctl get KEY` (embedded default store) beside a two-command
typer hello-world, hyperfine-style (each command run N times as a subprocess, interleaved, medians),
plus which driver modules each kvctl command imports and the slowest imports of `kvctl --help`.

    python bench/startup_bench.py [--runs 20] [--write bench/results/startup_RESULTS.md]

Target: each kvctl command within 1.5x of the hello-world's same command; `kvctl --help` imports
no driver (redis, asyncpg, lmdb, libsql_client, rocksdict, pyperf, memray).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import Report, parser, run_process

DRIVERS = ("redis", "hiredis", "asyncpg", "lmdb", "libsql_client", "rocksdict", "theine", "websockets",
           "cryptography", "sqlite3", "pyperf", "memray", "rich")
TARGET_RATIO = 1.5

HELLO = '''
import typer

app = typer.Typer()


@app.command()
def hello(name: str) -> None:
    """Say hello."""
    print(f"hello {name}")


@app.command()
def bye(name: str) -> None:
    """Say goodbye."""
    print(f"bye {name}")


if __name__ == "__main__":
    app()
'''

# run a program's main with an atexit hook that records the modules it imported
PROBE = ("import atexit, json, sys\n"
         "atexit.register(lambda: open({out!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
         "sys.argv = {argv!r}\n"
         "{run}\n")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}
    env.update(XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"), HOME=str(home))
    return env


def _time(cmd: list[str], env: dict[str, str]) -> float:
    return run_process(cmd, env=env, check=False, capture=False).seconds


def _modules(run: str, argv: list[str], env: dict[str, str], tmp: Path) -> set[str]:
    out = tmp / "modules.json"
    code = PROBE.format(out=str(out), argv=argv, run=run)
    subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return {m.partition(".")[0] for m in json.loads(out.read_text())}


def _importtime(argv: list[str], env: dict[str, str], top: int = 12, runs: int = 5) -> list[tuple[int, str]]:
    """Top-level imports by cumulative microseconds, the median of ``runs`` runs of -X importtime."""
    code = f"import sys; sys.argv = {argv!r}\nfrom kvctl.cli.app import main\nmain()\n"
    samples: dict[str, list[int]] = {}
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                              text=True, check=False)
        for line in proc.stderr.splitlines():  # "import time:  self_us | cumulative_us | indented.name"
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            parts = line.split("|")
            if len(parts) != 3 or len(parts[2]) - len(parts[2].lstrip()) > 2:
                continue  # only imports made at the top level (not nested in another import)
            try:
                samples.setdefault(parts[2].strip(), []).append(int(parts[1].strip()))
            except ValueError:
                continue
    medians = [(int(statistics.median(v)), name) for name, v in samples.items()]
    return sorted(medians, reverse=True)[:top]


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    report = Report("CLI start-up")

    with tempfile.TemporaryDirectory(prefix="kvctl-startup-") as tmpdir:
        tmp = Path(tmpdir)
        env = _env(tmp)
        hello = tmp / "hello.py"
        hello.write_text(HELLO)
        subprocess.run([sys.executable, "-m", "kvctl", "set", "greeting", "hello"], env=env, check=True,
                       capture_output=True)
        script = shutil.which("kvctl")  # the installed entry point, as users run it
        kvctl = [script] if script else [sys.executable, "-m", "kvctl"]
        pairs = [
            ("--help", [*kvctl, "--help"], [sys.executable, str(hello), "--help"]),
            ("get KEY / hello NAME", [*kvctl, "get", "greeting"], [sys.executable, str(hello), "hello", "world"]),
        ]
        times: dict[str, list[float]] = {}
        for _ in range(2):  # warm the page cache and .pyc files
            for _, a, b in pairs:
                _time(a, env)
                _time(b, env)
        for _ in range(args.runs):  # interleaved, so machine drift hits every command alike
            for label, a, b in pairs:
                times.setdefault(f"kvctl {label}", []).append(_time(a, env))
                times.setdefault(f"typer {label}", []).append(_time(b, env))

        run_kvctl = "from kvctl.cli.app import main\nmain()"
        help_mods = _modules(run_kvctl, ["kvctl", "--help"], env, tmp)
        get_mods = _modules(run_kvctl, ["kvctl", "get", "greeting"], env, tmp)
        breakdowns = {"kvctl --help": _importtime(["kvctl", "--help"], env),
                      "kvctl get KEY": _importtime(["kvctl", "get", "greeting"], env)}

    lines = [f"Each command ran {args.runs} times as a subprocess, "
             "interleaved with the others, after 2 warm-up rounds; figures are medians (min in brackets).", "",
             "| command | kvctl ms | typer hello-world ms | ratio of medians (of minima) | target |",
             "|---|---|---|---|---|"]
    ok = True
    for label, _, _ in pairs:
        k, t = times[f"kvctl {label}"], times[f"typer {label}"]
        ratio = statistics.median(k) / statistics.median(t)
        ok &= ratio <= TARGET_RATIO
        lines.append(f"| `{label}` | {statistics.median(k) * 1e3:.1f} ({min(k) * 1e3:.1f}) | "
                     f"{statistics.median(t) * 1e3:.1f} ({min(t) * 1e3:.1f}) | {ratio:.2f}x "
                     f"({min(k) / min(t):.2f}x) | "
                     f"{'met' if ratio <= TARGET_RATIO else 'MISSED'} (≤ {TARGET_RATIO}x) |")
    lines += ["", "## Driver modules imported", "", "| command | drivers and heavy libraries imported |", "|---|---|"]
    for label, mods in (("kvctl --help", help_mods), ("kvctl get KEY (embedded default)", get_mods)):
        found = sorted(m for m in DRIVERS if m in mods)
        lines.append(f"| `{label}` | {', '.join(found) if found else 'none'} |")
    forbidden = sorted(m for m in ("redis", "asyncpg", "lmdb", "libsql_client") if m in help_mods)
    ok &= not forbidden
    lines += ["", f"`kvctl --help` imports {'no driver' if not forbidden else 'DRIVERS: ' + ', '.join(forbidden)}."]
    for label, breakdown in breakdowns.items():
        lines += ["", f"## Slowest top-level imports of `{label}` (python -X importtime, cumulative)", "",
                  "| module | cumulative ms |", "|---|---|"]
        lines += [f"| `{name}` | {us / 1000:.1f} |" for us, name in breakdown]
    report.add(*lines).finish(args.write)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
