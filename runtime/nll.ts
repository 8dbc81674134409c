/**
 * Negative log-likelihoods for perplexity, computed by ONNX Runtime beside the model instead of in JavaScript: a
 * one-purpose graph (LogSoftmax over the vocabulary, the target's entry picked with GatherElements, negated) run
 * on the model's device. On CUDA with the native backend the logits stay on the GPU: a window of 2048 positions
 * over a 65536-token vocabulary no longer moves 512 MB to the host, and the log-sum-exp over 134 M values (about
 * 2.5 s in JavaScript) runs in ONNX Runtime's kernels.
 *
 *   inputs  logits [batch, positions, vocab] float32, targets [batch, positions] int64
 *   output  nll [batch, positions, 1] float32 = −log softmax(logits)[target]
 *
 * The softmax is over every entry of the logits' last dim, padding rows included, as the model's logits are.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HubmoeError } from '../src/errors.js';
import { writeOnnx } from '../src/onnx/export.js';
import { GraphBuilder } from '../src/onnx/graph.js';
import { TensorDataType } from '../src/onnx/proto.js';
import { VERSION } from '../src/version.js';
import { Tensor, createBackend, isDeviceValue } from './backend.js';
import type { InferenceBackend, SessionOptions, Value } from './backend.js';

function nllGraph(): GraphBuilder {
  const g = new GraphBuilder('fp32');
  const logits = g.input('logits', TensorDataType.FLOAT, ['batch', 'positions', 'vocab']);
  const targets = g.input('targets', TensorDataType.INT64, ['batch', 'positions']);
  // log Σ exp(logits) − logits[target]: a reduction and a gather, with no intermediate the size of the logits.
  const lse = g.op('ReduceLogSumExp', [logits, g.ints([2])], { keepdims: 1 });
  const picked = g.op('GatherElements', [logits, g.op('Unsqueeze', [targets, g.ints([2])])], { axis: 2 });
  g.output('nll', g.op('Sub', [lse, picked]), TensorDataType.FLOAT, ['batch', 'positions', 1]);
  return g;
}

/** A session of the NLL graph on a model's device and backend. */
export class NllScorer {
  private constructor(private readonly backend: InferenceBackend) {}

  /** Writes the graph to a temporary file, opens it with `options` (the model's device, backend, threads), removes the file. */
  static async create(options: SessionOptions): Promise<NllScorer> {
    const dir = await mkdtemp(join(tmpdir(), 'hubmoe-nll-'));
    try {
      await writeOnnx(nllGraph(), dir, 'nll', { producerVersion: VERSION });
      return new NllScorer(await createBackend(join(dir, 'nll.onnx'), { ...options, customOps: false, cudaGraph: false, profileFile: undefined }));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Σ over the B × T positions of −log p(targets[b, t]) under logits [B, T, V] (host, or a device value of this device). */
  async sum(logits: Value, targets: BigInt64Array, B: number, T: number): Promise<number> {
    const out = await this.backend.run({ logits, targets: new Tensor('int64', targets, [B, T]) });
    const nll = out.nll;
    if (!nll || isDeviceValue(nll)) throw new HubmoeError('RUNTIME', 'the NLL graph returned no host output');
    let total = 0;
    for (const v of nll.data as Float32Array) total += v;
    return total;
  }

  async release(): Promise<void> {
    await this.backend.release();
  }
}
