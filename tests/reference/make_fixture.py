#!/usr/bin/env python3
"""Makes tests/reference/deep-g2-b1.fst: the OFFICIAL FINE implementation's logits and gradients
for a configuration it never trained, at batch 1, where its arithmetic is A1's general rule.

Not run by the tests (it needs PyTorch and the official repository, themyrl/fine); it is kept so
the fixture can be remade. It executes fine_package/fine/network_architecture/fine.py as it is,
except the constants of its SYNAPSE branch (embed_dim, depths, num_heads) and the decoder's
depths, which it sets from our checkpoint's configuration; timm, einops and the nnU-Net imports
are replaced by the few functions the model uses (DropPath is the identity: evaluation mode).

  usage: make_fixture.py FINE_PY CKPT PATCHES OUT
  CKPT:    fine-model init --preset small --set vt_overflow=reference --set depths=3,4,3,3
           --set dec_depths=4,3,3 --set gt_num=2 --seed 5 -o CKPT
  PATCHES: one patch as tests/bats/reference.bats writes it
The output holds, per head, the logits at 4000 fixed positions and, per parameter with a
gradient, the gradient of the sum of both heads' logits at up to 16 positions (the largest
among them). PyTorch 1.13's CPU GELU backward is wrong for the patch embedding's first layers and
the input (pytorch/pytorch#107876, see tests/unit/test_model_parity.c): those are left out.
"""

import math
import os
import re
import sys
import types

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "formats", "python"))
import fine_stream  # noqa: E402

# ---- stand-ins for the reference's imports


def _parse(side):
    """einops axes of one side: a list of groups, each a list of names."""
    out, i = [], 0
    toks = re.findall(r"\(|\)|\w+", side)
    while i < len(toks):
        if toks[i] == "(":
            j = toks.index(")", i)
            out.append(toks[i + 1:j]); i = j + 1
        else:
            out.append([toks[i]]); i += 1
    return out


def _rearrange(x, pattern, **sizes):
    """einops rearrange / repeat for one level of parentheses: new axes on the right repeat."""
    l, r = [s.strip() for s in pattern.split("->")]
    L, R = _parse(l), _parse(r)
    dims = dict(sizes)
    for grp, n in zip(L, x.shape):
        unknown = [a for a in grp if a not in dims]
        known = math.prod(dims[a] for a in grp if a in dims)
        if len(unknown) == 1:
            dims[unknown[0]] = n // known
    latoms = [a for g in L for a in g]
    x = x.reshape([dims[a] for a in latoms])
    ratoms = [a for g in R for a in g]
    new = [a for a in ratoms if a not in latoms]
    perm = [latoms.index(a) for a in ratoms if a in latoms]
    x = x.permute(perm)
    for a in new:
        x = x.unsqueeze(ratoms.index(a))
    x = x.expand([dims[a] for a in ratoms])
    return x.reshape([math.prod(dims[a] for a in g) for g in R])


class DropPath(nn.Module):  # evaluation mode: the identity
    def __init__(self, p=0.0):
        super().__init__()

    def forward(self, x):
        return x


def _stand_ins():
    mods = {n: types.ModuleType(n) for n in (
        "einops", "timm", "timm.models", "timm.models.layers", "nnunet", "nnunet.utilities",
        "nnunet.utilities.nd_softmax", "nnunet.network_architecture",
        "nnunet.network_architecture.initialization", "fine", "fine.network_architecture",
        "fine.network_architecture.neural_network_ext")}
    mods["einops"].rearrange = mods["einops"].repeat = _rearrange
    layers = mods["timm.models.layers"]
    layers.DropPath = DropPath
    layers.to_3tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)
    layers.trunc_normal_ = lambda t, std=1.0: nn.init.trunc_normal_(t, std=std)
    mods["nnunet.utilities.nd_softmax"].softmax_helper = lambda x: torch.softmax(x, 1)
    mods["nnunet.network_architecture.initialization"].InitWeights_He = lambda *a, **k: None
    mods["fine.network_architecture.neural_network_ext"].SegmentationNetwork = nn.Module
    sys.modules.update(mods)


_stand_ins()

ref_py, ckpt, patches, out_path = sys.argv[1:5]
recs = list(fine_stream.read(ckpt))
model_rec = next(r for r in recs if r["type"] == "model")
cfg = model_rec["config"]
params = {r["name"]: r["array"] for r in recs if r["type"] == "param"}
assert cfg["crop"] == [64, 128, 128] and cfg["vt_overflow"] == 0, "the reference runs only this crop"

src = open(ref_py).read()
def sub(old, new):
    global src
    assert src.count(old) == 1, old
    src = src.replace(old, new)
sub("""            embed_dim=192
            depths=[2, 2, 2, 2]
            num_heads=[6, 12, 24, 48]""", f"""            embed_dim={cfg['embed_dim']}
            depths={cfg['depths']}
            num_heads={cfg['heads']}""")
sub("""num_heads=[24,12,6],
                            depths=[2,2,2],""", f"""num_heads={cfg['dec_heads']},
                            depths={cfg['dec_depths']},""")
mod = types.ModuleType("ref_fine")
exec(compile(src, "fine.py", "exec"), mod.__dict__)
torch.manual_seed(0)  # the parameters fine does not keep (dead, A1) get these values
net = mod.swintransformer(input_channels=cfg["in_chans"], num_classes=cfg["num_classes"], gt_num=cfg["gt_num"],
                          vt_map=tuple(cfg["vt_map"]), max_imsize=list(cfg["max_imsize"]), dataset="SYNAPSE")
net.eval()
sd = net.state_dict()
for k, v in params.items():
    assert tuple(sd[k].shape) == tuple(v.shape), (k, sd[k].shape, v.shape)
    sd[k].copy_(torch.from_numpy(np.asarray(v)))
net.vt_check.data.copy_(torch.from_numpy(np.asarray(model_rec["vt_check"], np.float32).reshape(-1, 1)))
pr = [r for r in fine_stream.read(patches) if r.get("type") == "patch"]
assert len(pr) == 1
x = torch.from_numpy(np.asarray(pr[0]["array"], np.float32))[None].requires_grad_(True)
out = net(x, [[int(v) for v in pr[0]["pos"]]])
(out[0].sum() + out[1].sum()).backward()
BUG = {"model_down.patch_embed.proj1.conv1.weight", "model_down.patch_embed.proj1.conv1.bias",
       "model_down.patch_embed.proj1.conv2.weight", "model_down.patch_embed.proj1.conv2.bias",
       "model_down.patch_embed.proj1.norm1.weight", "model_down.patch_embed.proj1.norm1.bias",
       "model_down.patch_embed.proj1.norm2.weight", "model_down.patch_embed.proj1.norm2.bias",
       "model_down.patch_embed.proj2.conv1.weight", "model_down.patch_embed.proj2.conv1.bias"}
rng = np.random.default_rng(0)
samples = []
for h in (0, 1):
    v = out[h].detach().numpy()[0].reshape(-1)
    idx = np.sort(rng.choice(v.size, 4000, replace=False)).astype(np.int64)
    samples.append({"type": "reference_sample", "name": f"head{h}", "index": idx, "value": v[idx].astype(np.float32),
                    "max_abs": float(np.abs(v).max())})
for k, p in net.named_parameters():
    if p.grad is None or k in BUG or float(p.grad.abs().max()) == 0:
        continue
    assert k in params, ("a reference parameter with a gradient that fine does not keep", k)
    g = p.grad.numpy().reshape(-1)
    order = np.argsort(-np.abs(g))
    idx = np.unique(np.concatenate([order[:1], rng.choice(g.size, min(15, g.size), replace=False)])).astype(np.int64)
    samples.append({"type": "reference_sample", "name": "grad/" + k, "index": idx, "value": g[idx].astype(np.float32),
                    "max_abs": float(np.abs(g).max())})
fine_stream.write(out_path, samples, tool="make_fixture.py", args=sys.argv)
print(f"{out_path}: {len(samples)} sampled tensors")
