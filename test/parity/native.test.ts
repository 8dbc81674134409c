/**
 * The same parity suite through hubmoe's native backend (the N-API addon, built by
 * `npm run build:native`, which CI runs): sessions created by the addon, caches fed back as device
 * values (CPU memory here; CUDA memory on a GPU).
 */
import { parityCase } from './parity.js';

parityCase({ name: 'jamba-demo', padded: 'reference', load: { backend: 'native' }, variant: 'native backend' });
parityCase({ name: 'blackmamba-glu-bias', load: { backend: 'native' }, variant: 'native backend' });
parityCase({ name: 'mamba-hf', padded: 'reference', load: { backend: 'native' }, variant: 'native backend' });

// The fused target: hubmoe's own SelectiveScan and MoE operators (runtime/native/ops), CPU kernels.
for (const name of ['jamba-demo', 'jamba-odd', 'jamba-dense', 'blackmamba-glu-bias', 'blackmamba-plain', 'moe-mamba', 'mamba-hf', 'mamba-ss']) {
  parityCase({ name, convert: { target: 'fused' }, load: { backend: 'native' }, variant: 'fused target' });
}
