"""BlackMamba-2.8B's configuration with random bf16 weights: the speed of Zyphra's reference code (eager PyTorch),
and the checkpoint hubmoe converts for the side-by-side run (bench/run_h200.sh blackmamba).

    python3 bench/blackmamba_2p8b.py --blackmamba-repo .ref/BlackMamba --out DIR --json results.json
        [--prefill 2048] [--batches 1,16] [--prompt 64] [--steps 32] [--skip-bench] [--tiny]

The configuration is Zyphra/BlackMamba-2.8B's config.json on the Hub (commit 80635e3, "Rename 2.8b_config.json
to config.json"): 36 blocks alternating a Mamba mixer ("r") and an 8-expert MoE ("8"), hidden 1472, state 16,
conv 4, expansion 2, vocabulary 50304, experts of 3872 with SwiGLU, no linear biases, max sequence 2048. The
config names no activation or routing, so Zyphra's code takes its defaults: GELU in the GLU, sinkhorn routing
(sigmoid top-1 at inference). 2.8 B parameters; a token at batch 1 reads one expert of 8 in each MoE block.

The reference is Zyphra/BlackMamba's own code (the commit fixtures/scripts/make_blackmamba.py names), imported
the way that script imports it: the compiled selective-scan and causal-conv1d extensions are absent, so prefill
runs its pure-PyTorch scan and nn.Conv1d, and a decode step MambaLayer.step with its Triton
selective_state_update (what the code does on any CUDA machine without mamba-ssm). Decode goes through its cached
path: a mamba-ssm style InferenceParams, a prefill call, then one call per token. Timings use CUDA events / a
synchronised clock after warm-ups, as bench/jamba_period.py does for transformers.

--tiny builds a small model of the same layout on the CPU, to check the script without a GPU.
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'fixtures', 'scripts'))
import make_blackmamba as mb  # noqa: E402  (sets CUBLAS_WORKSPACE_CONFIG before torch initialises CUDA)
import torch  # noqa: E402

sys.path.insert(0, HERE)
from gpu_util import copy_bandwidth, decode_row, timed_ms  # noqa: E402

LAYERS = ['r', '8'] * 18
CONFIG = mb.bm_config(36, 1472, 16, 4, 50304, 2, LAYERS, 3872, False, True, max_sequence_length=2048)
TINY = mb.bm_config(4, 64, 16, 4, 264, 2, ['r', '8'] * 2, 96, False, True, max_sequence_length=2048)
HUB_CONFIG = 'https://huggingface.co/Zyphra/BlackMamba-2.8B/blob/main/config.json'


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def init_(model, seed, device):
    """Random weights at a realistic scale, drawn on the device: linear weights N(0, 0.02), norms 1, D 1,
    A_log log(1..N), dt biases softplus⁻¹ of values in [1e-3, 1e-1], embedding N(0, 0.02)."""
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split('.')[-1]
            if leaf == 'A_log':
                n = p.shape[-1]
                p.copy_(torch.log(torch.arange(1, n + 1, device=device, dtype=torch.float32)).expand_as(p))
            elif leaf == 'D' or ('norm' in name and leaf == 'weight'):
                p.fill_(1.0)
            elif 'dt_proj' in name and leaf == 'bias':
                u = torch.rand(p.shape, device=device, generator=g)
                dt = torch.exp(u * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif p.dim() == 1:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, device=device, generator=g) * 0.02)


def active_params(model, config):
    """Weights read per token at batch 1: every tensor once (the tied embedding as the LM head), one expert of
    each MoE block's experts."""
    total = 0
    for name, p in model.named_parameters():  # named_parameters lists the tied embedding once
        n = p.numel()
        if '.local_experts.' in name:
            block = int(name.split('.')[2]) if name.startswith('decoder.layers.') else None
            experts = int(config['mamba_moe_layers'][block][-1]) if block is not None else 1
            n //= experts
        total += n
    return total


@torch.no_grad()
def bench(model, config, device, prefill, batches, prompt, steps, n_mamba):
    V = config['vocab_size']
    out = {}
    ids = torch.randint(3, V, (1, prefill), device=device)
    model(ids)  # warm-up
    ms = timed_ms(lambda: model(ids), 2, device)
    out['prefill'] = dict(tokens=prefill, seconds=ms / 1000, tokensPerSecond=prefill / (ms / 1000))
    log(f'reference prefill {prefill}: {ms / 1000:.3f} s')
    out['decode'] = []
    for B in batches:
        p = torch.randint(3, V, (B, prompt), device=device)
        times = []
        for run in range(2):  # the first run is a warm-up
            params = mb.InferenceParams(max_seqlen=prompt + steps + 1, max_batch_size=B)
            logits = model(p, inference_params=params)
            assert len(params.key_value_memory_dict) == n_mamba, len(params.key_value_memory_dict)
            params.seqlen_offset += prompt
            tok = logits[:, -1].argmax(-1).view(B, 1)
            for _ in range(steps):
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                t = time.perf_counter()
                logits = model(tok, inference_params=params)
                tok = logits[:, -1].argmax(-1).view(B, 1)
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                if run == 1:
                    times.append((time.perf_counter() - t) * 1000)
                assert logits.shape[:2] == (B, 1), logits.shape
                params.seqlen_offset += 1
        out['decode'].append(decode_row(B, times))
        log(f'reference decode batch {B}: {out["decode"][-1]["msPerStep"]:.2f} ms/step')
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--blackmamba-repo', required=True, help="a work tree of Zyphra/BlackMamba (see fixtures/scripts/make_blackmamba.py)")
    ap.add_argument('--out', required=True, help='checkpoint dir to write (config.json + pytorch_model.bin)')
    ap.add_argument('--json', required=True)
    ap.add_argument('--prefill', type=int, default=2048)
    ap.add_argument('--batches', default='1,16')
    ap.add_argument('--prompt', type=int, default=64)
    ap.add_argument('--steps', type=int, default=32)
    ap.add_argument('--seed', type=int, default=11)
    ap.add_argument('--skip-bench', action='store_true', help='only build and save the checkpoint')
    ap.add_argument('--tiny', action='store_true', help='a small model of the same layout on the CPU, to check the script')
    args = ap.parse_args()
    config = TINY if args.tiny else CONFIG
    device = torch.device('cpu' if args.tiny or not torch.cuda.is_available() else 'cuda')
    if device.type != 'cuda' and not args.tiny:
        raise SystemExit('no CUDA device: the benchmark needs a GPU (--tiny checks the script on the CPU)')
    mods, notes = mb.import_reference(args.blackmamba_repo)
    if device.type != 'cuda':
        # Without CUDA the repository's Triton kernels cannot run: its pure-PyTorch alternatives (as make_blackmamba.py --kernels torch).
        mods['mamba_block'].RMSNorm = mb.TorchRMSNorm
        notes['kernels'] = 'torch (CPU check)'
    torch.backends.cuda.matmul.allow_tf32 = False
    spec = dict(config=config, routing_mode='sinkhorn', activation='gelu', dtype='bfloat16')
    t0 = time.time()
    bw = copy_bandwidth(device)
    # Zyphra's MambaModel makes some modules (the embedding) on the CPU whatever MambaConfig.device says.
    model = mb.build_direct(mods, spec, device).to(device)
    init_(model, args.seed, device)
    if device.type == 'cuda':
        model = model.to(torch.bfloat16)
    model = model.eval()
    n_total = sum(p.numel() for p in model.parameters())
    n_active = active_params(model, config)
    n_mamba = sum(1 for e in config['mamba_moe_layers'] if e[0] == 'r')
    log(f'built in {time.time() - t0:.0f} s: {n_total / 1e9:.2f} B parameters, {n_active / 1e9:.2f} B read per token')
    os.makedirs(args.out, exist_ok=True)
    t1 = time.time()
    mb.save_checkpoint(model, spec, args.out)
    log(f'saved in {time.time() - t1:.0f} s')
    if args.skip_bench:
        return
    res = bench(model, config, device, args.prefill if not args.tiny else 32, [int(b) for b in args.batches.split(',')],
                args.prompt if not args.tiny else 8, args.steps if not args.tiny else 4, n_mamba)
    res.update(label="Zyphra's BlackMamba code, eager PyTorch (bf16)", torch=torch.__version__,
               gpu=torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu', copyBandwidth=bw,
               parameters=n_total, activeParameters=n_active, config=config, configSource=HUB_CONFIG,
               mamba_ssm='absent (pure-PyTorch selective scan and convolution at prefill; Triton selective_state_update at decode)',
               reference=notes)
    with open(args.json, 'w') as f:
        json.dump(res, f, indent=2, default=str)
    print(json.dumps(res, default=str))


if __name__ == '__main__':
    main()
