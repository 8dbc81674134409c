import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { fixture, tempDir } from '../helpers.js';
import { parityCase } from './parity.js';

// Zyphra's BlackMamba code (pure-PyTorch scan, Triton RMSNorm, fp32 on an H200); pytorch_model.bin
// with the state dict under "model". Sigmoid top-1 routing scaled by the score, erf-GELU experts.
parityCase({ name: 'blackmamba-glu-bias' }); // GLU experts, biases everywhere, a dense MLP block ("1"), "24" → 4 experts
parityCase({ name: 'blackmamba-plain' }); // no GLU, no biases, stored in bf16
parityCase({ name: 'blackmamba-silu' }); // SiLU experts (activation_func in the config), stored in fp16
// MoE-Mamba: the BlackMamba layout with routing_mode "top1" (softmax top-1).
parityCase({ name: 'moe-mamba' });
// transformers' MambaForCausalLM, and the same weights in the original state-spaces layout.
parityCase({ name: 'mamba-hf', padded: 'reference' });
parityCase({ name: 'mamba-ss' });
// transformers ≥ 5 masks padding before in_proj, so with use_bias its padded row differs from the
// row alone (its reference.json records 3e-2); hubmoe masks after in_proj and matches the row alone.
parityCase({ name: 'mamba-hf-bias', padded: 'alone' });

describe('BlackMamba blocks the schema cannot express', () => {
  it('refuses Mamba blocks with a parallel MLP/MoE ("r1", "r4") by name', async () => {
    const dir = await tempDir();
    const err = await convert(fixture('blackmamba-parallel', 'checkpoint'), { outDir: join(dir, 'out') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubmoeError);
    expect((err as HubmoeError).message).toMatch(/entry 0 is "r1": Mamba blocks with a parallel MLP\/MoE are not supported/);
  });
});
