import { parityCase } from './parity.js';

// Jamba-v0.1's schedule (attention at layer 4, MoE at odd layers), GQA 4/2, top-2 of 8 experts.
parityCase({ name: 'jamba-demo', padded: 'reference' });
// Attention 3/1 and MoE 2/0 (layer 4 has attention + MoE), MQA, top-3 of 4, projection biases, tied
// embeddings, sharded with an index. transformers ≥ 5 masks padding before in_proj, so with an
// in_proj bias its padded row differs from the row alone (its own reference.json records 3.8e-2);
// hubmoe masks after in_proj, so the padded row equals the reference's row run alone.
parityCase({ name: 'jamba-odd', padded: 'alone' });
// The same weights with experts packed as gate_up_proj / down_proj.
parityCase({ name: 'jamba-odd-packed', reference: 'jamba-odd' });
// num_experts = 1 (dense MLPs only), stored in bf16.
parityCase({ name: 'jamba-dense', padded: 'reference' });
