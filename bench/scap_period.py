"""SCAP thresholds for the Jamba-v0.1 period (bench/jamba_period.py's checkpoint) at given sparsities, for the decode
speed of the fused sparse operators (bench/scap-speed.mjs, docs/scap.md).

    python3 bench/scap_period.py --checkpoint DIR --sparsity 0.4,0.5 --out DIR/scap [--tokens 1024]

The model has random weights, so there is no text to calibrate on: the inputs are random token ids. Each
fully-connected input of hubmoe's schema (Mamba in/out_proj, attention q/k/v and o, MLP gate/up and down, each
expert's gate/up and down) is captured by transformers 5.17's JambaForCausalLM on `--tokens` calibration tokens
(the experts' from the MoE input and the router's top-k, computed here from the same weights), and its threshold is
the quantile of |x| giving the target sparsity (modes 0: no centering). The sparsity the thresholds give on a
second, held-out batch of random tokens is recorded too. Writes scap-<s>.json per sparsity: hubmoe site →
{type, threshold, calibration_sparsity, heldout_sparsity, values}.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import JambaForCausalLM


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def capture(model, ids):
    """Every FC input (float32, [tokens, K]) of one forward pass, keyed by hubmoe site; experts computed here."""
    got = {}
    hooks = []

    def keep(site, typ):
        def hook(_mod, args, *_):
            got[site] = (typ, args[0].detach().reshape(-1, args[0].shape[-1]).float())
        return hook

    for i, layer in enumerate(model.model.layers):
        mixer, ffn = f'blocks.{2 * i}', f'blocks.{2 * i + 1}'
        if hasattr(layer, 'mamba'):
            hooks.append(layer.mamba.in_proj.register_forward_pre_hook(keep(f'{mixer}.mamba.in_proj', 'mamba_in')))
            hooks.append(layer.mamba.out_proj.register_forward_pre_hook(keep(f'{mixer}.mamba.out_proj', 'mamba_out')))
        else:
            hooks.append(layer.self_attn.q_proj.register_forward_pre_hook(keep(f'{mixer}.attn.qkv', 'attn_qkv')))
            hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(keep(f'{mixer}.attn.o', 'attn_o')))
        ff = layer.feed_forward
        if hasattr(ff, 'router'):
            hooks.append(ff.register_forward_pre_hook(keep(f'{ffn}.moe', 'moe')))
        else:
            hooks.append(ff.gate_proj.register_forward_pre_hook(keep(f'{ffn}.mlp.up', 'mlp_up')))
            hooks.append(ff.down_proj.register_forward_pre_hook(keep(f'{ffn}.mlp.down', 'mlp_down')))
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            site = f'blocks.{2 * i + 1}.moe'
            if site not in got:
                continue
            _, x = got.pop(site)
            ff = layer.feed_forward
            logits = ff.router(x.to(ff.router.weight.dtype)).float()
            top = logits.topk(model.config.num_experts_per_tok, dim=-1).indices
            experts = ff.experts
            if hasattr(experts, 'gate_up_proj'):  # packed: [X, 2I, H], gate rows first
                inter = experts.gate_up_proj.shape[1] // 2
                gate = lambda e: experts.gate_up_proj[e, :inter]
                up = lambda e: experts.gate_up_proj[e, inter:]
                count = experts.gate_up_proj.shape[0]
            else:  # a ModuleList of JambaMLP
                gate = lambda e: experts[e].gate_proj.weight
                up = lambda e: experts[e].up_proj.weight
                count = len(experts)
            for e in range(count):
                rows = (top == e).any(-1)
                xe = x[rows]
                h = F.silu(xe @ gate(e).float().T) * (xe @ up(e).float().T)
                out[f'{site}.{e}.up'] = ('expert_up', xe)
                out[f'{site}.{e}.down'] = ('expert_down', h)
    out.update(got)
    return out


def quantile(v, q):
    """Linearly interpolated quantile of a 1-D tensor (as hubmoe's calibration computes it)."""
    s = v.sort().values
    pos = q * (s.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, s.numel() - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--checkpoint', required=True)
    ap.add_argument('--sparsity', default='0.4,0.5')
    ap.add_argument('--out', required=True)
    ap.add_argument('--tokens', type=int, default=1024)
    ap.add_argument('--seed', type=int, default=11)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = JambaForCausalLM.from_pretrained(args.checkpoint, dtype=torch.bfloat16, device_map='cuda').eval()
    V = model.config.vocab_size
    g = torch.Generator(device='cuda').manual_seed(args.seed)
    batch = lambda: torch.randint(3, V, (args.tokens // 256, 256), device='cuda', generator=g)
    calib = capture(model, batch())
    held = capture(model, batch())
    log(f'{len(calib)} sites captured on {args.tokens} calibration tokens')
    for s in [float(v) for v in args.sparsity.split(',')]:
        sites = {}
        for site, (typ, x) in sorted(calib.items()):
            if x.numel() == 0:
                continue
            a = x.abs().flatten()
            t = quantile(a, s)
            hx = held[site][1].abs().flatten()
            sites[site] = dict(type=typ, threshold=t, calibration_sparsity=float((a <= t).float().mean()),
                               heldout_sparsity=float((hx <= t).float().mean()) if hx.numel() else None, values=a.numel())
        path = os.path.join(args.out, f'scap-{s:g}.json')
        with open(path, 'w') as f:
            json.dump(dict(sparsity=s, tokens=args.tokens, seed=args.seed, sites=sites), f, indent=1)
        by = {}
        for v in sites.values():
            by.setdefault(v['type'], []).append(v['heldout_sparsity'] or 0)
        log(f'{path}: ' + ', '.join(f'{k} {100 * sum(v) / len(v):.1f} %' for k, v in sorted(by.items())) + ' (held-out)')


if __name__ == '__main__':
    main()
