import json
import subprocess
import sys


def test_bench_inference_prints_json_records():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vos.bench",
            "inference",
            "--json",
            "--height=32",
            "--width=48",
            "--at",
            "3",
            "8",
            "--window=1",
            "--max-memory-frames=2",
            "--mem-every=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    names = [r["name"] for r in records]
    assert names == ["inference/frame3", "inference/frame8", "inference/late_vs_early"]
    for record in records:
        assert {"name", "setting", "ms", "peak_mb"} <= record.keys()
        assert record["ms"] > 0
        assert record["setting"]["resolution"] == "32x48"
    # the cap bounds the memory read at frame 8: 2 memory frames + the previous one
    assert records[1]["memory_frames"] <= 3
