/**
 * Inference backends: a session over one ONNX model file. The CPU backend (and CUDA, when
 * onnxruntime-node's CUDA execution provider libraries are installed) is stock onnxruntime-node.
 */
import ort from 'onnxruntime-node';
import { HubmoeError } from '../src/errors.js';

export type Device = 'cpu' | 'cuda';
export type Tensor = ort.Tensor;
export const Tensor = ort.Tensor;

export interface InferenceBackend {
  readonly device: Device;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Declared shape of an input: numbers, or names of symbolic dims. */
  inputShape(name: string): Array<number | string>;
  inputType(name: string): string;
  run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
}

export interface SessionOptions {
  device: Device;
  /** Threads for the CPU provider (default: ONNX Runtime's choice). */
  threads?: number;
}

class OrtBackend implements InferenceBackend {
  constructor(
    readonly device: Device,
    private readonly session: ort.InferenceSession,
  ) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  private meta(name: string): ort.InferenceSession.ValueMetadata {
    const m = this.session.inputMetadata.find((x) => x.name === name);
    if (!m) throw new HubmoeError('RUNTIME', `the model has no input ${name}`);
    return m;
  }

  inputShape(name: string): Array<number | string> {
    const m = this.meta(name);
    return m.isTensor ? [...m.shape] : [];
  }

  inputType(name: string): string {
    const m = this.meta(name);
    return m.isTensor ? m.type : 'unknown';
  }

  async run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    try {
      return (await this.session.run(feeds)) as Record<string, Tensor>;
    } catch (err) {
      throw new HubmoeError('RUNTIME', `ONNX Runtime failed: ${(err as Error).message}`, { cause: err });
    }
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export async function createBackend(modelPath: string, opts: SessionOptions): Promise<InferenceBackend> {
  const providers = opts.device === 'cuda' ? ['cuda'] : ['cpu'];
  try {
    const session = await ort.InferenceSession.create(modelPath, {
      executionProviders: providers,
      graphOptimizationLevel: 'all',
      ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}),
    });
    return new OrtBackend(opts.device, session);
  } catch (err) {
    const msg = (err as Error).message ?? String(err);
    if (opts.device === 'cuda') {
      throw new HubmoeError(
        'RUNTIME',
        `could not start ONNX Runtime's CUDA execution provider for ${modelPath}: ${msg}. The CUDA provider libraries (libonnxruntime_providers_cuda.so) must sit next to onnxruntime-node's libonnxruntime.so.1; see docs/cuda.md`,
        { cause: err },
      );
    }
    throw new HubmoeError('RUNTIME', `ONNX Runtime could not load ${modelPath}: ${msg}`, { cause: err });
  }
}
