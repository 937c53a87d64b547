#!/usr/bin/python3
# Checks a directory of traces written by tests/test_trace.c (TALLY_TRACE) and tools/tally-trace on
# them. usage: check_trace.py ring|rhd|tree|tool|threads|killed DIR TALLY_TRACE_TOOL [TALLY_PERF]
# Every mode validates each file: it parses as JSON, carries the required fields, and on each rank
# the call spans are ordered and disjoint, every message span lies inside a call span and the spans
# of one track are disjoint; clock offsets (one machine: one clock) are 0 within their error bound.
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

EPS_US = 0.002  # timestamps are written to the nanosecond, in microseconds

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL: " + what, file=sys.stderr)
    return ok


def trace_files(d):
    return sorted(p for p in glob.glob(os.path.join(d, "tally-*.json")) if "flight" not in p)


def validate(path):
    with open(path) as f:
        events = json.load(f)  # a closed file is a complete JSON array
    check(isinstance(events, list) and events, "%s: not a non-empty JSON array" % path)
    meta = [e for e in events if e.get("name") == "tally_trace"][0]["args"]
    for key in ("rank", "nranks", "host_index", "comm_id", "clock_offset_ns", "clock_error_ns"):
        check(key in meta, "%s: metadata lacks %s" % (path, key))
    names = [e for e in events if e.get("name") == "process_name"]
    check(len(names) == 1 and names[0]["args"]["name"].startswith("rank %d (host " % meta["rank"]),
          "%s: process_name is not 'rank R (host H...)': %s" % (path, names))
    check(any(e.get("name") == "tally_trace_end" for e in events), "%s: no closing tally_trace_end" % path)
    spans = [e for e in events if e.get("ph") == "X"]
    for e in spans:
        check(e["pid"] == meta["rank"], "%s: pid %s is not the rank" % (path, e["pid"]))
        check(e["dur"] >= 0, "%s: negative duration: %s" % (path, e))
        need = ("seq", "collective", "algorithm", "bytes", "datatype", "chunk", "predicted_us") \
            if e["cat"] == "call" else ("seq", "peer", "bytes", "transport", "direction")
        for key in need:
            check(key in e["args"], "%s: a %s span lacks %s: %s" % (path, e["cat"], key, e))
    calls = sorted((e for e in spans if e["cat"] == "call"), key=lambda e: e["ts"])
    check(calls, "%s: no call spans" % path)
    for a, b in zip(calls, calls[1:]):
        check(a["ts"] + a["dur"] <= b["ts"] + EPS_US, "%s: calls #%d and #%d overlap" % (path, a["args"]["seq"],
                                                                                        b["args"]["seq"]))
        check(a["args"]["seq"] <= b["args"]["seq"], "%s: call #%d after #%d" % (path, b["args"]["seq"],
                                                                              a["args"]["seq"]))
    tracks = {}
    for m in (e for e in spans if e["cat"] == "message"):
        tracks.setdefault(m["tid"], []).append(m)
        inside = [c for c in calls if c["ts"] - EPS_US <= m["ts"] and m["ts"] + m["dur"] <= c["ts"] + c["dur"] + EPS_US]
        check(len(inside) == 1, "%s: message span outside every call span: %s" % (path, m))
        if inside:
            check(inside[0]["args"]["seq"] == m["args"]["seq"], "%s: message of #%d inside call #%d" % (
                path, m["args"]["seq"], inside[0]["args"]["seq"]))
    for tid, ms in tracks.items():
        ms.sort(key=lambda e: e["ts"])
        for a, b in zip(ms, ms[1:]):
            check(a["ts"] + a["dur"] <= b["ts"] + EPS_US, "%s: messages overlap on track %d" % (path, tid))
    offset, error = meta["clock_offset_ns"], meta["clock_error_ns"]
    if meta["rank"] == 0:
        check(offset == 0 and error == 0, "%s: rank 0's clock offset is %d +- %d" % (path, offset, error))
    else:
        check(0 < error < 50_000_000, "%s: clock error bound %d ns" % (path, error))
        check(abs(offset) <= error + 1, "%s: offset %d ns to rank 0 exceeds its bound %d ns on one clock" % (
            path, offset, error))
    return meta, events


def run_tool(tool, *args, expect=0):
    p = subprocess.run([tool] + list(args), capture_output=True, text=True)
    check(p.returncode == expect, "tally-trace %s: status %d (expected %d): %s" % (
        " ".join(args), p.returncode, expect, p.stderr.strip()))
    return p


def summary(tool, d):
    p = run_tool(tool, "summary", d, "--json")
    return json.loads(p.stdout) if p.returncode == 0 else []


def counters(d):
    out = {}
    for p in glob.glob(os.path.join(d, "counters-*.json")):
        with open(p) as f:
            c = json.load(f)
        out[c["rank"]] = c
    return out


def check_counters(tool, d):
    """The summary's bytes equal the counters: the matrix row by row, the bytes per collective."""
    s = summary(tool, d)
    if not check(len(s) == 1, "expected one communicator in the summary, got %d" % len(s)):
        return None, None
    s, k = s[0], counters(d)
    n = s["nranks"]
    check(sorted(k) == list(range(n)), "counters of ranks %s" % sorted(k))
    for r in range(n):
        check(s["matrix"][r] == k[r]["sent"], "rank %d: traced bytes sent %s, counters %s" % (
            r, s["matrix"][r], k[r]["sent"]))
    for row in s["rows"]:
        counted = sum(x["bytes"] for c in k.values() for x in c["rows"]
                      if x["collective"] == row["collective"] and x["algorithm"] == row["algorithm"])
        check(row["bytes"] == counted, "%s %s: summary bytes %d, counters %d" % (
            row["collective"], row["algorithm"], row["bytes"], counted))
    return s, k


def check_ring(tool, d):
    s, k = check_counters(tool, d)
    if not s:
        return
    n, S, calls = s["nranks"], k[0]["bytes_per_call"], k[0]["calls"]
    per_rank = calls * 2 * (n - 1) * S // n
    for r in range(n):
        want = [per_rank if p == (r + 1) % n else 0 for p in range(n)]
        check(s["matrix"][r] == want, "ring: rank %d sent %s, analytic %s" % (r, s["matrix"][r], want))
    # ranks 0,1 on host 0 and 2,3 on host 1: the ring crosses between hosts twice
    check(s["host_matrix"] == [[per_rank, per_rank], [per_rank, per_rank]], "host matrix %s" % s["host_matrix"])
    files = trace_files(d)
    merged = os.path.join(d, "merged.out")
    run_tool(tool, "merge", d, "-o", merged)
    with open(merged) as f:
        events = json.load(f)["traceEvents"]
    total = 0
    for p in files:
        with open(p) as f:
            total += sum(1 for e in json.load(f) if e.get("ph") == "X")
    check(sum(1 for e in events if e.get("ph") == "X") == total, "merge lost spans")
    rows = sorted((e["args"]["sort_index"], e["pid"]) for e in events if e.get("name") == "process_sort_index")
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    check(len(names) == n, "merge made %d process rows for %d ranks" % (len(names), n))
    hosts = [int(names[pid].split("(host ")[1].split(":")[0]) for _, pid in rows]
    check(hosts == sorted(hosts), "merged rows are not grouped by host: %s" % hosts)


def check_rhd(tool, d):
    s, k = check_counters(tool, d)
    if not s:
        return
    n, S, calls = s["nranks"], k[0]["bytes_per_call"], k[0]["calls"]
    # Rabenseifner: S/2 then S/4 out in the reduce-scatter and back in the allgather, so S to one
    # partner and S/2 to the other; recursive doubling of the whole vector: S to each.
    forms = ({S * calls, S * calls // 2}, {S * calls})
    for r in range(n):
        row = s["matrix"][r]
        partners = {r ^ 1, r ^ 2}
        check(all(row[p] == 0 for p in range(n) if p not in partners), "rhd: rank %d sent off-partner: %s" % (r, row))
        check({row[p] for p in partners} in forms and sum(row) in (3 * S * calls // 2, 2 * S * calls),
              "rhd: rank %d sent %s; analytic: S and S/2 to its two partners (S = %d, %d calls)" % (r, row, S, calls))


def check_tree(tool, d):
    s, k = check_counters(tool, d)
    if not s:
        return
    n, S, calls = s["nranks"], k[0]["bytes_per_call"], k[0]["calls"]
    m = s["matrix"]
    # two trees, each moving its half of the vector up and down each of its n-1 edges
    check(sum(map(sum, m)) == 2 * (n - 1) * S * calls, "tree: %d bytes in all, analytic 2(n-1)S x calls = %d" % (
        sum(map(sum, m)), 2 * (n - 1) * S * calls))
    for r in range(n):
        for p in range(n):
            check(m[r][p] == m[p][r], "tree: %d->%d %d but %d->%d %d" % (r, p, m[r][p], p, r, m[p][r]))
            check(m[r][p] % (S * calls // 2) == 0, "tree: %d->%d %d is not a multiple of S/2" % (r, p, m[r][p]))


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


perf_tool = None  # tally-perf, for the tool mode's --plot checks


def check_tool(tool, d):
    check_counters(tool, d)
    out = tempfile.mkdtemp(prefix="tally-trace-tool-")
    try:
        png = os.path.join(out, "plot.png")
        run_tool(tool, "plot", d, "-o", png)
        check(png_size(png) == (1600, 1000) and os.path.getsize(png) > 10000, "plot: %s" % (png_size(png),))
        run_tool(tool, "plot", d, "-o", png, "--size", "800x600")
        check(png_size(png) == (800, 600), "plot --size 800x600: %s" % (png_size(png),))
        perf = os.path.join(out, "perf.json")
        with open(perf, "w") as f:
            json.dump({"tool": "tally-perf", "collective": "allreduce", "nranks": 2, "rows": [
                {"bytes": b, "count": b // 4, "out_of_place": {"time_us": 10.0, "algbw": b / 1e4, "busbw": b / 1e4}}
                for b in (8, 1024, 65536)]}, f)
        anchor = os.path.join(out, "anchor.txt")
        with open(anchor, "w") as f:
            f.write("# mpi_coll allreduce, 2 ranks\n#        size        count   type  redop   time(us)    algbw"
                    "    busbw  #wrong\n            8            2  float    sum       3.10    0.003    0.003       0\n"
                    "         1024          256  float    sum       5.00    0.205    0.205       0\n")
        run_tool(tool, "perfplot", perf, "--anchor", anchor, "-o", png)
        check(png_size(png) == (1200, 800) and os.path.getsize(png) > 5000, "perfplot: %s" % (png_size(png),))
        if perf_tool:  # tally-perf --plot runs tally-trace perfplot on its JSON, beside the PNG
            perf_png = os.path.join(out, "run.png")
            p = subprocess.run([perf_tool, "allreduce", "-N", "2", "-b", "8", "-e", "64K", "-f", "8", "-n", "2",
                                "-w", "1", "--plot", perf_png, "--plot-with", anchor], capture_output=True, text=True)
            check(p.returncode == 0 and png_size(perf_png) == (1200, 800), "tally-perf --plot: status %d, %s: %s" % (
                p.returncode, png_size(perf_png) if os.path.exists(perf_png) else "no PNG", p.stderr.strip()))
            check(os.path.exists(os.path.join(out, "run.json")), "tally-perf --plot wrote no run.json")
            p = subprocess.run([perf_tool, "allreduce", "--plot-with", anchor], capture_output=True, text=True)
            check(p.returncode == 2 and "give --plot FILE.png too" in p.stderr, "--plot-with alone: %s" % p.stderr)
        # bad input: clear errors, status 1
        p = run_tool(tool, "summary", os.path.join(out, "missing"), expect=1)
        check("is not a directory" in p.stderr, "missing dir: %s" % p.stderr)
        empty = os.path.join(out, "empty")
        os.mkdir(empty)
        p = run_tool(tool, "plot", empty, "-o", png, expect=1)
        check("holds no tally-*.json" in p.stderr and "TALLY_TRACE" in p.stderr, "empty dir: %s" % p.stderr)
        bad = os.path.join(out, "bad")
        os.mkdir(bad)
        with open(os.path.join(bad, "tally-0.json"), "w") as f:
            f.write("this is not json\n")
        p = run_tool(tool, "merge", bad, "-o", os.path.join(out, "m.json"), expect=1)
        check("tally-0.json: not trace-event JSON" in p.stderr, "malformed file: %s" % p.stderr)
        with open(os.path.join(bad, "tally-0.json"), "w") as f:
            f.write('[\n{"name":"x","ph":"X"},\n{broken\n{"name":"y","ph":"i"},\n')
        p = run_tool(tool, "summary", bad, expect=1)
        check("line 3 is not a trace event" in p.stderr, "malformed line: %s" % p.stderr)
        broken = os.path.join(out, "broken.json")
        with open(broken, "w") as f:
            f.write('{"tool": "tally-perf", "rows": [\n')
        p = run_tool(tool, "perfplot", broken, "-o", png, expect=1)
        check("broken.json: not JSON" in p.stderr, "perfplot of a broken JSON file: %s" % p.stderr)
        run_tool(tool, "perfplot", perf, anchor, "-o", png)  # an anchor table given without --anchor
        with open(os.path.join(bad, "tally-0.json"), "w") as f:
            f.write('[\n{"name":"tally_trace","ph":"M","pid":0,"tid":0,"args":{"rank":0,"nranks":1,'
                    '"host_index":0,"comm_id":"0"}},\n{"name":"allreduce","cat":"call","ph":"X","pid":0,"tid":0,'
                    '"ts":1,"dur":1,"args":{"seq":0}},\n]\n')
        p = run_tool(tool, "summary", bad, expect=1)
        check("a span without collective, algorithm" in p.stderr, "a call without its fields: %s" % p.stderr)
        p = run_tool(tool, "perfplot", perf, "--anchor", perf, "-o", png, expect=1)
        check("no rows of an nccl-tests style table" in p.stderr, "perfplot of a bad anchor: %s" % p.stderr)
        p = run_tool(tool, "flight", empty, expect=1)
        check("holds no tally-flight-*.txt" in p.stderr, "flight of an empty dir: %s" % p.stderr)
        with open(os.path.join(empty, "tally-flight-0-0.txt"), "w") as f:
            f.write("garbage\n")
        p = run_tool(tool, "flight", empty, expect=1)
        check("not a flight record file" in p.stderr, "flight of a malformed file: %s" % p.stderr)
        os.remove(os.path.join(empty, "tally-flight-0-0.txt"))
        p = run_tool(tool, "plot", d, "-o", png, "--size", "huge", expect=1)
        check("WIDTHxHEIGHT" in p.stderr, "bad --size: %s" % p.stderr)
        # a rank that crashed: its file ends mid-line, without the closing bracket; it still loads
        cut = os.path.join(out, "cut")
        os.mkdir(cut)
        for p in trace_files(d):
            shutil.copy(p, cut)
        victim = os.path.join(cut, "tally-1.json")
        with open(victim) as f:
            text = f.read()
        keep = text[: text.rindex('{"name":"allreduce"') + 40]
        with open(victim, "w") as f:
            f.write(keep)
        s = summary(tool, cut)
        whole = summary(tool, d)
        if check(s and whole, "summary of a truncated trace"):
            calls = lambda x: sum(r["calls"] for r in x[0]["rows"])
            check(calls(s) == calls(whole), "a truncated file lost more than its last call: %d of %d" % (
                calls(s), calls(whole)))
    finally:
        shutil.rmtree(out)


def check_threads(tool, d):
    files = trace_files(d)
    check(len(files) >= 4, "expected several communicators' traces, got %s" % files)
    merged = os.path.join(d, "merged.out")
    run_tool(tool, "merge", d, "-o", merged)
    with open(merged) as f:
        events = json.load(f)["traceEvents"]
    names = [e for e in events if e.get("name") == "process_name"]
    check(len(names) == 2, "two rank processes, %d rows" % len(names))
    run_tool(tool, "summary", d)


def check_killed(tool, d):
    """Rank 1 was killed after 20 allreduces: its file has no closing bracket, yet tally-trace reads
    all 20 (and merges and summarizes the job)."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("tally_trace", tool)
    spec = importlib.util.spec_from_loader("tally_trace", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    path = os.path.join(d, "tally-1.json")
    with open(path) as f:
        text = f.read()
    check(not text.rstrip().endswith("]"), "the killed rank's file is closed")
    calls = [c for c in module.Trace(path).calls if c["name"] == "allreduce"]
    check(len(calls) >= 20, "the killed rank's file holds %d of its 20 allreduces" % len(calls))
    run_tool(tool, "merge", d, "-o", os.path.join(d, "merged.out"))
    run_tool(tool, "summary", d)


def main():
    global perf_tool
    mode, d, tool = sys.argv[1:4]
    perf_tool = sys.argv[4] if len(sys.argv) > 4 else None
    files = trace_files(d)
    check(files, "no traces in %s" % d)
    for p in files:
        if not (mode == "killed" and p.endswith("tally-1.json")):
            validate(p)
    {"killed": check_killed, "ring": check_ring, "rhd": check_rhd, "tree": check_tree, "tool": check_tool,
     "threads": check_threads}[mode](tool, d)
    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("check_trace %s: %d files ok" % (mode, len(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
