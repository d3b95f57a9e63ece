#!/usr/bin/env bats
# fine-model: configurations, parameter counts, checkpoints, running patches.

load common

@test "the bcv preset has the reference's 222,312,466 parameters (B 4.3), 85,384,734 dead" {
    run fine-model describe --preset bcv --batch 2
    [ "$status" -eq 0 ]
    [[ "$output" == *"136927732 live, 222312466 in the reference model (85384734 never reach an output)"* ]]
    [[ "$output" == *"embed_dim=192"* ]]
    [[ "$output" == *"heads=6,12,24,48"* ]]
    [[ "$output" == *"dec_heads=24,12,6"* ]]
}

@test "vt_map 3,5,5 gives the reference's 222,350,491 parameters" {
    run fine-model describe --preset bcv --set vt_map=3,5,5
    [ "$status" -eq 0 ]
    [[ "$output" == *"222350491 in the reference model"* ]]
}

@test "describe prints a configuration that --config reads back" {
    fine-model describe --preset tiny --set embed_dim=12 | grep -v '^#' >"$T/tiny.cfg"
    run fine-model describe --config "$T/tiny.cfg"
    [ "$status" -eq 0 ]
    [[ "$output" == *"embed_dim=12"* ]]
    [[ "$output" == *"window=2"* ]]
}

@test "window: one edge for every stage or one per stage; a checkpoint with one edge (older) still loads" {
    run fine-model describe --preset tiny --set window=4
    [ "$status" -eq 0 ]
    [[ "$output" == *"window=4,4,4,4"* ]]
    run fine-model describe --preset bcv --set window=4,4,8,4
    [ "$status" -eq 0 ]
    [[ "$output" == *"encoder stage 2: 8x8x8 tokens, 768 channels, 24 heads, window 8, 1 windows"* ]]
    run fine-model describe --preset tiny --set window=2,2,2
    [ "$status" -eq 2 ]
    [[ "$output" == *"config window: expected 1 or 4 integers, got '2,2,2'"* ]]
    run fine-model describe --preset tiny --set window=2,3,2,2
    [ "$status" -eq 1 ]
    [[ "$output" == *"stage 1"*"windows of 3 do not tile"* ]]
    # a checkpoint written before per-stage windows has `window` as one integer
    fine-model init --preset tiny --seed 7 -o "$T/a.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, fine_stream
t = sys.argv[1]
recs = list(fine_stream.read(t + "/a.fst"))
assert recs[0]["config"]["window"] == [2, 2, 2, 2], recs[0]["config"]["window"]
recs[0]["config"]["window"] = 2
fine_stream.write(t + "/old.fst", recs, tool="test")
PY
    run fine-model describe --model "$T/old.fst"
    [ "$status" -eq 0 ]
    [[ "$output" == *"window=2,2,2,2"* ]]
}

@test "bad configurations are refused naming the field" {
    run fine-model describe --preset tiny --set heads=5,2,4,8
    [ "$status" -eq 1 ]
    [[ "$output" == *"heads[0] = 5 does not divide 24 channels"* ]]
    run fine-model describe --preset tiny --set nonsense=3
    [ "$status" -eq 2 ]
    [[ "$output" == *"unknown configuration key 'nonsense'"* ]]
    run fine-model describe --preset bcv --set crop=64,100,128
    [ "$status" -eq 1 ]
    [[ "$output" == *"crop"* ]]
    run fine-model describe --preset nope
    [ "$status" -eq 2 ]
    run fine-model describe --preset tiny --set gt_num=5
    [ "$status" -eq 1 ]
    [[ "$output" == *"gt_num 5 must be 1..4"* ]]
    run fine-model describe --preset tiny --set depths=2,9,2,2
    [ "$status" -eq 1 ]
    [[ "$output" == *"depths[1] = 9 must be 1..8"* ]]
}

# params FILE: "live reference" parameter counts from fine-model describe's output
params() { sed -n 's/^# parameters: \([0-9]*\) live, \([0-9]*\) in the reference.*/\1 \2/p' "$1"; }

@test "depths above 2 and 2 memory tokens per window: the live parameters, the counts, a checkpoint round trip" {
    fine-model describe --preset tiny > "$T/d1"
    fine-model describe --preset tiny --set gt_num=2 > "$T/d2"
    read -r l1 r1 < <(params "$T/d1")
    read -r l2 r2 < <(params "$T/d2")
    # gt_num 2 adds, per layer, a second global token and pe rows nW * (2^3 - 1): tiny's grids
    # 16, 8, 4, 2 in windows of 2 have 512, 64, 8, 1 windows, C = 24, 48, 96, 192, the decoder
    # the first three again: sum of C * (1 + 7 nW) = 114600 + 113064
    [ $((l2 - l1)) -eq 227664 ]
    [ $((r2 - r1)) -eq 227664 ]
    fine-model init --preset tiny --set depths=3,2,4,2 --set gt_num=2 --seed 5 -o "$T/m.fst"
    run fine-model describe --model "$T/m.fst"
    [ "$status" -eq 0 ]
    [[ "$output" == *"depths=3,2,4,2"* ]]
    [[ "$output" == *"gt_num=2"* ]]
    # vt_attn where a later block's gt_attn reads the bank: stage 0 block 0, stage 2 blocks 0, 1
    "$FINE_PYTHON" - "$T/m.fst" <<'PY'
import sys, fine_stream
names = {r["name"]: r["array"].shape for r in fine_stream.read(sys.argv[1]) if "name" in r and "array" in r}
vt = sorted(n for n in names if ".vt_attn." in n)
assert vt == sorted(f"model_down.layers.{l}.blocks.{b}.vt_attn.{m}.{p}" for l, b in ((0, 0), (2, 0), (2, 1))
                    for m in ("qkv", "proj") for p in ("weight", "bias")), vt
gt = sorted(n for n in names if ".gt_attn." in n and n.startswith("model_down.layers.2."))
assert len(gt) == 12, gt  # blocks 0, 1, 2 of 4
assert names["model_down.layers.0.global_token"] == (2, 24), names["model_down.layers.0.global_token"]
assert names["model_down.layers.0.pe"] == (512 * 8, 24), names["model_down.layers.0.pe"]
assert names["encoder.layers.2.pe"] == (8 * 8, 96), names["encoder.layers.2.pe"]
PY
}

@test "init writes a checkpoint that loads back with the same configuration and values" {
    fine-model init --preset tiny --seed 7 -o "$T/a.fst"
    fine-model init --preset tiny --seed 7 -o "$T/b.fst"
    fine-model init --preset tiny --seed 8 -o "$T/c.fst"
    run fine-model describe --model "$T/a.fst"
    [ "$status" -eq 0 ]
    [[ "$output" == *"window=2"* ]]
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
def params(p):
    return {r["name"]: r["array"] for r in fine_stream.read(p) if r["type"] == "param"}
a, b, c = params(t + "/a.fst"), params(t + "/b.fst"), params(t + "/c.fst")
assert a.keys() == b.keys() and len(a) > 100
assert all(np.array_equal(a[k], b[k]) for k in a), "same seed, same values"
assert any(not np.array_equal(a[k], c[k]) for k in a), "another seed, other values"
# B 4.1: LayerNorm weight 1 bias 0; conv weights within +-1/sqrt(fan_in); tokens ~ N(0,1)
w = a["model_down.patch_embed.proj1.norm1.weight"]; assert np.all(w == 1)
cw = a["model_down.patch_embed.proj2.conv1.weight"]; bound = 1 / np.sqrt(cw.shape[1] * 27)
assert np.abs(cw).max() <= bound and np.abs(cw).max() > 0.9 * bound
up = a["encoder.layers.0.Upsample.up.weight"]  # ConvTranspose: fan_in = out * k^3
assert np.abs(up).max() <= 1 / np.sqrt(up.shape[1] * 8)
vt = a["model_down.layers.0.volume_token"]; assert 0.5 < vt.std() < 1.5
tab = a["model_down.layers.0.blocks.0.attn.relative_position_bias_table"]; assert tab.std() < 0.05
# dead parameters are not stored (A1)
assert not any(".vt_attn." in k for k in a)
assert "model_down.layers.0.blocks.1.gt_attn.qkv.weight" not in a
assert "model_down.layers.0.blocks.0.gt_attn.qkv.weight" in a
assert not any(k.startswith("final.2") or k.startswith("model_down.layers.3.downsample") for k in a)
PY
}

@test "a checkpoint with a missing parameter is refused naming it" {
    fine-model init --preset tiny -o "$T/a.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, fine_stream
t = sys.argv[1]
recs = [r for r in fine_stream.read(t + "/a.fst") if r.get("name") != "final.1.up.bias"]
fine_stream.write(t + "/b.fst", recs, tool="test")
PY
    run fine-model describe --model "$T/b.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"parameter 'final.1.up.bias' is missing"* ]]
    head -c 300 "$T/a.fst" >"$T/cut.fst"
    run fine-model describe --model "$T/cut.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"truncated"* ]]
}

@test "run writes both heads' logits per patch, batched or not alike" {
    fine-model init --preset tiny --seed 1 -o "$T/m.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
rng = np.random.default_rng(0)
recs = [{"type": "patch", "case": "c%d" % i, "name": "image", "pos": [0, 5 * i, -7 * i],
         "array": rng.standard_normal((1, 32, 64, 64)).astype(np.float32)} for i in range(3)]
recs.append({"type": "case_end", "case": "c"})
fine_stream.write(t + "/p.fst", recs, tool="test")
PY
    fine-model run --model "$T/m.fst" "$T/p.fst" "$T/l1.fst"
    fine-model run --model "$T/m.fst" --batch 2 "$T/p.fst" "$T/l2.fst"
    "$FINE_PYTHON" - "$T" <<'PY'
import sys, numpy as np, fine_stream
t = sys.argv[1]
a = list(fine_stream.read(t + "/l1.fst")); b = list(fine_stream.read(t + "/l2.fst"))
la = [r for r in a if r["type"] == "logits"]; lb = [r for r in b if r["type"] == "logits"]
assert len(la) == 3 and len(lb) == 3
assert la[0]["head0"].shape == (14, 32, 64, 64) and la[0]["head1"].shape == (14, 32, 32, 32)
for x, y in zip(la, lb):
    assert x["case"] == y["case"]
    assert np.allclose(x["head0"], y["head0"], atol=1e-4), np.abs(x["head0"] - y["head0"]).max()
assert [r["type"] for r in a][-1] == "case_end", "other records pass through"
PY
}

@test "run refuses patches of another size" {
    fine-model init --preset tiny -o "$T/m.fst"
    "$FINE_PYTHON" -c "
import numpy as np, fine_stream
fine_stream.write('$T/p.fst', [{'type': 'patch', 'case': 'x', 'pos': [0, 0, 0], 'array': np.zeros((1, 16, 64, 64), np.float32)}])"
    run fine-model run --model "$T/m.fst" "$T/p.fst" "$T/l.fst"
    [ "$status" -eq 1 ]
    [[ "$output" == *"patch is not f32 [1, 32, 64, 64]"* ]]
    [ ! -e "$T/l.fst" ]
}
