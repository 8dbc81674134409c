"""One 8-layer period of Jamba-v0.1 at full width, random bf16 weights: transformers' eager speed, and
the checkpoint hubmoe converts for the side-by-side run (bench/run_h200.sh).

    python3 bench/jamba_period.py --out /tmp/jamba-period --json results.json [--prefill 2048] [--batches 1,16]

Config: hidden 4096, 32 heads / 8 KV heads, 8 layers (attention at layer 4, Mamba elsewhere), MoE on odd
layers with 16 experts of 14336 (top-2), dense MLPs of 14336 on even layers, d_state 16, d_conv 4,
expand 2, vocab 65536. transformers 5.17 JambaForCausalLM, attn_implementation="eager",
use_mamba_kernels=False: mamba_ssm and causal_conv1d are not installed, so the mixers run transformers'
pure-PyTorch fallbacks. Timings use CUDA events after warm-ups.
"""
import argparse
import json
import os
import sys
import time

import torch
import transformers
from transformers import JambaConfig, JambaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_util import copy_bandwidth, decode_row, timed_ms  # noqa: E402

CONFIG = dict(vocab_size=65536, hidden_size=4096, intermediate_size=14336, num_hidden_layers=8, num_attention_heads=32,
              num_key_value_heads=8, num_experts=16, num_experts_per_tok=2, expert_layer_period=2, expert_layer_offset=1,
              attn_layer_period=8, attn_layer_offset=4, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2,
              mamba_dt_rank=256, use_mamba_kernels=False, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2)


DEVICE = 'cuda'


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(seed):
    cfg = JambaConfig(**CONFIG)
    cfg._attn_implementation = 'eager'
    torch.manual_seed(seed)
    with torch.device(DEVICE):
        model = JambaForCausalLM(cfg).to(torch.bfloat16).eval()
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('A_log'):
                n = p.shape[-1]
                p.copy_(torch.log(torch.arange(1, n + 1, device=DEVICE, dtype=torch.float32)).expand_as(p))
            elif name.endswith('.D') or ('norm' in name and name.endswith('weight')):
                p.fill_(1.0)
            elif name.endswith('dt_proj.bias'):
                dt = torch.exp(torch.rand(p.shape, device=DEVICE, generator=g) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(0.001))).item() + torch.log(torch.tensor(0.001)).item())
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif p.dim() == 1:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, device=DEVICE, generator=g) * 0.02)
    return model


def active_params(model):
    """Weights read per token at batch 1: everything but the idle experts and the embedding table (one row)."""
    total = 0
    for name, p in model.named_parameters():
        if 'embed_tokens' in name:
            continue
        n = p.numel()
        if '.experts.' in name:
            n = n * CONFIG['num_experts_per_tok'] // CONFIG['num_experts']
        total += n
    return total


@torch.no_grad()
def bench(model, prefill, batches, prompt, steps):
    out = {}
    ids = torch.randint(3, CONFIG['vocab_size'], (1, prefill), device=DEVICE)
    model(ids, use_cache=True)  # warm-up
    ms = timed_ms(lambda: model(ids, use_cache=True), 3, DEVICE)
    out['prefill'] = dict(tokens=prefill, seconds=ms / 1000, tokensPerSecond=prefill / (ms / 1000))
    log(f'eager prefill {prefill}: {ms / 1000:.3f} s')
    out['decode'] = []
    for B in batches:
        p = torch.randint(3, CONFIG['vocab_size'], (B, prompt), device=DEVICE)
        times = []
        for run in range(2):  # the first run is a warm-up
            res = model(p, use_cache=True)
            cache = res.past_key_values
            tok = res.logits[:, -1].argmax(-1, keepdim=True)
            pos = prompt
            for i in range(steps):
                step = lambda: model(tok, past_key_values=cache, use_cache=True, cache_position=torch.tensor([pos], device=DEVICE))
                t = time.perf_counter()
                if DEVICE == 'cuda':
                    torch.cuda.synchronize()
                res = step()
                tok = res.logits[:, -1].argmax(-1, keepdim=True)
                if DEVICE == 'cuda':
                    torch.cuda.synchronize()
                ms = (time.perf_counter() - t) * 1000
                cache = res.past_key_values
                pos += 1
                if run == 1:
                    times.append(ms)
        out['decode'].append(decode_row(B, times))
        log(f'eager decode batch {B}: {out["decode"][-1]["msPerStep"]:.2f} ms/step')
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--json', required=True)
    ap.add_argument('--prefill', type=int, default=2048)
    ap.add_argument('--batches', default='1,16')
    ap.add_argument('--prompt', type=int, default=64)
    ap.add_argument('--steps', type=int, default=32)
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--no-save', action='store_true')
    ap.add_argument('--tiny', action='store_true', help='a small config on the CPU, to check the script')
    ap.add_argument('--experts', type=int, help='override num_experts (2 keeps the batch-1 weights read per token, for profiling)')
    ap.add_argument('--skip-bench', action='store_true', help='only build and save the checkpoint')
    args = ap.parse_args()
    if args.experts:
        CONFIG['num_experts'] = args.experts
    if args.tiny:
        global DEVICE
        DEVICE = 'cpu'
        CONFIG.update(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, num_experts=4,
                      vocab_size=256, mamba_dt_rank=4)
    torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.time()
    bw = copy_bandwidth(DEVICE)
    log(f'copy bandwidth {bw / 1e12:.2f} TB/s')
    model = build(args.seed)
    n_active = active_params(model)
    n_total = sum(p.numel() for p in model.parameters())
    log(f'built in {time.time() - t0:.0f} s: {n_total / 1e9:.2f} B parameters, {n_active / 1e9:.2f} B read per token')
    if not args.no_save:
        t1 = time.time()
        model.save_pretrained(args.out, max_shard_size='4GB')
        log(f'saved in {time.time() - t1:.0f} s')
    if args.skip_bench:
        return
    res = bench(model, args.prefill, [int(b) for b in args.batches.split(',')], args.prompt, args.steps)
    res.update(label='transformers eager (bf16)', transformers=transformers.__version__, torch=torch.__version__,
               gpu=torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu', copyBandwidth=bw, parameters=n_total, activeParameters=n_active,
               mamba_ssm='absent (pure-PyTorch selective scan and convolution)', config=CONFIG)
    with open(args.json, 'w') as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == '__main__':
    main()
