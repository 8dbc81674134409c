/**
 * A stand-in for hubmoe's native runtime (runtime/native's NativeBinding), for the 'hubmoe' backend
 * (src/transformers/ort-backend.ts) to sit on: sessions run on onnxruntime-node's CPU provider, and
 * outputs asked for as `deviceOutputs` come back as FakeDeviceValues, whose "device memory" only this
 * runtime reads. It counts what the real backend must get right: sessions created, device values
 * handed out and taken back as feeds, downloads to the host (transformers.js must never need one for
 * a cache), disposals, and any use of a value after it was disposed.
 */
import ort from 'onnxruntime-node';
import type { Tensor } from 'onnxruntime-node';
import type { DeviceValueLike, HostTensorLike, NativeRuntimeLike, NativeSessionLike } from '../../src/transformers/index.js';

export class FakeDeviceValue implements DeviceValueLike {
  disposed = false;
  constructor(
    private readonly runtime: FakeNative,
    private readonly tensor: Tensor,
  ) {}

  get type(): string {
    return this.tensor.type;
  }

  get dims(): readonly number[] {
    return this.tensor.dims;
  }

  /** What a kernel on the device reads (no download). */
  read(): Tensor {
    if (this.disposed) this.runtime.stats.useAfterDispose++;
    return this.tensor;
  }

  download(): HostTensorLike {
    this.runtime.stats.downloads++;
    return this.tensor;
  }

  dispose(): void {
    if (!this.disposed) this.runtime.stats.disposed++;
    this.disposed = true;
  }
}

export interface CreatedSession {
  path: string;
  options: Parameters<NativeRuntimeLike['createSession']>[1];
}

export class FakeNative implements NativeRuntimeLike {
  readonly created: CreatedSession[] = [];
  readonly stats = { runs: 0, deviceOutputs: 0, deviceFeeds: 0, downloads: 0, disposed: 0, useAfterDispose: 0 };
  /** Output names asked for on the device, per run. */
  readonly deviceOutputRequests: string[][] = [];
  /** When set, session creation fails with this message (to see which file was asked for without running it). */
  failCreate: string | undefined;

  isDeviceValue(value: unknown): boolean {
    return value instanceof FakeDeviceValue;
  }

  async createSession(modelPath: string, options: CreatedSession['options']): Promise<NativeSessionLike> {
    this.created.push({ path: modelPath, options });
    if (this.failCreate) throw new Error(`${this.failCreate}: ${modelPath}`);
    const session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
    const runtime = this;
    return {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputMetadata: session.inputMetadata,
      outputMetadata: session.outputMetadata,
      async run(feeds, options) {
        runtime.stats.runs++;
        runtime.deviceOutputRequests.push([...(options.deviceOutputs ?? [])]);
        const host: Record<string, Tensor> = {};
        for (const [name, value] of Object.entries(feeds)) {
          if (value instanceof FakeDeviceValue) {
            runtime.stats.deviceFeeds++;
            host[name] = value.read();
          } else {
            const h = value as HostTensorLike;
            host[name] = new ort.Tensor(h.type as 'float32', h.data as Float32Array, h.dims);
          }
        }
        const out = options.outputs ? await session.run(host, [...options.outputs]) : await session.run(host);
        const result: Record<string, HostTensorLike | DeviceValueLike> = {};
        for (const [name, t] of Object.entries(out)) {
          if (options.deviceOutputs?.includes(name)) {
            runtime.stats.deviceOutputs++;
            result[name] = new FakeDeviceValue(runtime, t);
          } else {
            result[name] = { type: t.type, dims: t.dims, data: t.data };
          }
        }
        return result;
      },
      release: () => session.release(),
    };
  }
}
