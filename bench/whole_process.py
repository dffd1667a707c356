#!/usr/bin/env python3
"""Whole-process timings of the EMA(50/200) cross backtest: `albra backtest` beside the peers, each
started as a fresh process that imports what it needs, reads the CSV and runs once, in one command.

Why: `../shared/bench/peers/RESULTS.md` times the peers *in process* (imports, CSV loading and the
first call excluded), while the issue times `albra backtest` as a whole process. This script puts
both kinds of figure side by side on the same machine, in the same command, so they can be compared
on equal terms:

* albra            `albra --config none backtest --strategy EMA_CROSS --data FILE --fee 0.0004
                   --slippage 0 --risk off` (the reference run: event-driven, the live decision,
                   order and paper-fill code);
* vectorbt-rust    vectorbt 1.0 `Portfolio.from_signals(engine="rust")`, the peers' `full_run`;
* vectorbt-numba   the same with the default numba engine (numba compiles vectorbt's kernels again
                   in every new process: vectorbt 1.0 does not cache them on disk);
* backtesting.py   backtesting.py 0.6.6 `FractionalBacktest.run()` with the peers' strategy;
* nautilus         (only with --nautilus: 5–7 s a run) NautilusTrader 1.221, next-open mode.

Each peer run is `python whole_process.py --one PEER`: it imports the peer's own benchmark module
from the peers' directory and runs what that module runs (vectorbt's `full_run`, Nautilus's
`make_engine`; backtesting.py's script builds its `FractionalBacktest` inside `main`, so its
settings are repeated here), loads the CSV with pandas as those scripts do, runs once and prints
its final equity and trade count, which the driver shows once so a wrong run is visible (the
figures of RESULTS.md: 10818.22, 10803.86, 10814.44, 307 trades each). The commands run in
rounds (A B C … then again, the order rotated each round); every figure is wall time from start
to exit, as medians with the minimum and maximum, and each peer's ratio to albra is the median of
its per-round ratios, which keeps the comparison meaningful while the machine's speed drifts.
Each albra run follows seconds of Python work (memory to reclaim, caches replaced), so its figure
here reads higher than the same command timed on its own: the ratios are, if anything, in the
peers' favour.

Usage (from the repository root; the Python is the peers' venv, `bash ../shared/bench/peers/setup.sh`):
  /tmp/peers/venv/bin/python bench/whole_process.py [--runs 11] [--albra PATH] [--nautilus]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PEERS = ROOT.parent / "shared" / "bench" / "peers"
DEFAULT_DATA = ROOT / "data" / "BTCUSDT-spot-1h.csv"
PEERS = ["vectorbt-rust", "vectorbt-numba", "backtesting.py"]


def one(peer, peers_dir, data):
    """One whole run of `peer` in this process: import, read the CSV, run, print the result."""
    if peer not in PEERS + ["nautilus"]:
        raise SystemExit(f"unknown peer {peer!r} (valid: {', '.join(PEERS)}, nautilus)")
    sys.path.insert(0, str(peers_dir))
    import bench_common as C  # noqa: E402  (imports numpy and the reference's CSV reader)

    d = C.R.load_csv(data)
    # The file's own spacing (the most common one), as the peers' scripts are told it.
    steps, counts = C.np.unique(C.np.diff(d["open_time"]), return_counts=True)
    d["interval_ms"] = int(steps[counts.argmax()])
    if peer.startswith("vectorbt-"):
        import pandas as pd
        import bench_vectorbt as V

        close_s = pd.Series(d["close"], index=pd.to_datetime(d["open_time"], unit="ms"))
        freq = pd.Timedelta(milliseconds=d["interval_ms"])
        engine = peer.split("-", 1)[1]
        _, final_eq, _, trades, _ = V.full_run(d, close_s, freq, engine)
    elif peer == "backtesting.py":
        import bench_backtesting_py as B
        from backtesting.lib import FractionalBacktest

        # bench_backtesting_py.main's settings (it builds them inline, there is nothing to call).
        stats = FractionalBacktest(
            B.to_df(d),
            B.EmaCross,
            cash=C.R.INITIAL_EQUITY,
            commission=C.R.COMMISSION,
            margin=1.0,
            trade_on_close=False,
            hedging=False,
            exclusive_orders=True,
            finalize_trades=True,
            fractional_unit=1e-8,
        ).run()
        final_eq, trades = float(stats["Equity Final [$]"]), int(stats["# Trades"])
    else:
        import bench_nautilus as N

        engine, strat = N.make_engine(d, "next-open")
        engine.run()
        final_eq = engine.portfolio.account(N.VENUE).balance_total(N.USDT).as_double()
        trades = len(N.trades_and_curve(list(strat.fills), d)[0])
        engine.dispose()
    print(f"{peer}: final equity {final_eq:.2f}, {trades} trades")


def albra_cmd(binary, data):
    return [
        str(binary), "--config", "none", "backtest", "--strategy", "EMA_CROSS",
        "--data", str(data), "--fee", "0.0004", "--slippage", "0", "--risk", "off",
    ]


def run(cmd):
    """Wall seconds and standard output of one whole process; a failure stops the script."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()}")
    return wall, p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=11, help="rounds of every command (default 11)")
    ap.add_argument("--albra", type=Path, help="the albra binary (default: the release build)")
    ap.add_argument("--peers", type=Path, default=DEFAULT_PEERS, help=f"peers' scripts (default {DEFAULT_PEERS})")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="candles (default data/BTCUSDT-spot-1h.csv)")
    ap.add_argument("--nautilus", action="store_true", help="include NautilusTrader (slow: 5–7 s a run)")
    ap.add_argument("--one", metavar="PEER", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        one(a.one, a.peers.resolve(), a.data.resolve())
        return
    if not (a.peers / "bench_common.py").is_file():
        raise SystemExit(f"no peers' scripts in {a.peers} (give --peers)")
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "albra-target"))
    binary = a.albra or target / "release" / "albra"
    if not binary.is_file():
        raise SystemExit(f"no albra binary at {binary}: run `make build` or give --albra")
    cmds = {"albra": albra_cmd(binary, a.data)}
    for peer in PEERS + (["nautilus"] if a.nautilus else []):
        cmds[peer] = [sys.executable, __file__, "--one", peer, "--peers", str(a.peers), "--data", str(a.data)]

    # One untimed run each: warms the page cache and shows each result.
    for name, cmd in cmds.items():
        _, out = run(cmd)
        lines = [l for l in out.splitlines() if l.strip()]
        shown = next((l for l in lines if l.startswith("EMA_CROSS") or "final equity" in l), "(no result line)")
        print(f"check  {name:<15} {shown.strip()}", flush=True)

    names = list(cmds)
    walls = {n: [] for n in names}
    for r in range(a.runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            walls[n].append(run(cmds[n])[0])
        print(f"\rround {r + 1}/{a.runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    print(f"whole process, wall seconds over {a.runs} rounds ({a.data.name}):")
    print(f"  {'command':<15} {'median':>9} {'min':>9} {'max':>9}   ratio to albra (median of per-round ratios)")
    base = walls["albra"]
    for n in names:
        w = walls[n]
        ratio = statistics.median(x / b for x, b in zip(w, base))
        print(f"  {n:<15} {statistics.median(w):9.4f} {min(w):9.4f} {max(w):9.4f}   {ratio:8.1f}x")


if __name__ == "__main__":
    main()
