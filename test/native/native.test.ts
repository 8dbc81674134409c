/**
 * The native backend (runtime/native) on the CPU: loading, metadata, parity with onnxruntime-node,
 * cached decode through device-value handles, errors. CI builds the addon first (npm run build:native);
 * elsewhere the model tests are skipped when it is not built.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { HubmoeError } from '../../src/errors.js';
import { createBackend } from '../../runtime/backend.js';
import { writeOnnx } from '../../src/onnx/export.js';
import { GraphBuilder } from '../../src/onnx/graph.js';
import { TensorDataType } from '../../src/onnx/proto.js';
import type { InferenceBackend, Tensor } from '../../runtime/backend.js';
import { createNativeSession, loadNative, nativeStatus, onnxruntimeLibraryPath } from '../../runtime/native/index.js';
import type { DeviceValue, HostTensor, NativeBinding, NativeFeed, NativeOutputs, NativeSession } from '../../runtime/native/index.js';
import { fixture, tempDir } from '../helpers.js';

const native = loadNative();
// CI must have built the addon: there a missing addon fails the tests instead of skipping them.
const skipModel = !native && !process.env.CI;

describe('native addon', () => {
  it('loads, or says why not, without throwing', () => {
    const status = nativeStatus();
    if (process.env.CI) expect(status, status.reason).toMatchObject({ addon: true });
    if (!status.addon) {
      expect(status.reason).toMatch(/build:native|not built|could not/);
      return;
    }
    expect(status.path).toMatch(/hubmoe_native\.node$/);
    expect(status.providers).toContain('CPUExecutionProvider');
    expect(status.ortLibrary).toBe(onnxruntimeLibraryPath());
  });

  it.skipIf(!native)('reports the ONNX Runtime version and API level, and its providers', () => {
    const v = native!.version();
    expect(v.ort).toBe(ort.env.versions.common);
    expect(v.api).toBeGreaterThanOrEqual(21);
    expect(native!.providers()).toContain('CPUExecutionProvider');
  });

  it.skipIf(!native)('maps one copy of ONNX Runtime into the process', () => {
    const maps = readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .map((l) => l.trim().split(/\s+/).slice(5).join(' '))
      .filter((p) => /libonnxruntime\.so/.test(p));
    expect(new Set(maps).size).toBe(1);
  });

  it.skipIf(!native)('refuses to load a second ONNX Runtime', async () => {
    const { createRequire } = await import('node:module');
    const raw = createRequire(import.meta.url)(native!.addonPath) as { init(p: string): unknown };
    expect(() => raw.init('/tmp/other/libonnxruntime.so.1')).toThrow(/already loaded/);
  });
});

describe.skipIf(skipModel)('native sessions on the CPU', () => {
  let n: NativeBinding;
  let modelPath: string;
  let dir: string;
  let reference: InferenceBackend;
  let session: NativeSession;

  beforeAll(async () => {
    n = native!;
    dir = await tempDir('hubmoe-native-');
    await convert(fixture('jamba-demo', 'checkpoint'), { outDir: join(dir, 'm'), dtype: 'fp32' });
    modelPath = join(dir, 'm', 'onnx', 'model.onnx');
    reference = await createBackend(modelPath, { device: 'cpu', threads: 1 });
    // logSeverity 4: the failure tests below would print ONNX Runtime's own error lines.
    session = await n.createSession(modelPath, { device: 'cpu', threads: 1, logSeverity: 4 });
  });
  afterAll(async () => {
    await session?.release();
    await reference?.release();
  });

  const ids = (rows: number[][]): { input_ids: HostTensor; attention_mask: HostTensor } => {
    const T = rows[0]!.length;
    return {
      input_ids: { type: 'int64', dims: [rows.length, T], data: BigInt64Array.from(rows.flat(), (t) => BigInt(t)) },
      attention_mask: { type: 'int64', dims: [rows.length, T], data: new BigInt64Array(rows.length * T).fill(1n) },
    };
  };

  /** Zero caches for a batch of B, as runtime/model.ts makes them (symbolic dims other than batch_size are 0). */
  const emptyCaches = (B: number): Record<string, HostTensor> => {
    const feeds: Record<string, HostTensor> = {};
    for (const m of session.inputMetadata) {
      if (m.name === 'input_ids' || m.name === 'attention_mask' || !m.isTensor) continue;
      const dims = m.shape.map((d) => (typeof d === 'number' ? d : d === 'batch_size' ? B : 0));
      feeds[m.name] = { type: 'float32', dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)) };
    }
    return feeds;
  };

  const presentOf = (past: string): string =>
    past.startsWith('past_key_values.') ? past.replace('past_key_values.', 'present.') : past.replace(/^past_/, 'present_');
  const cacheInputs = (): string[] => session.inputNames.filter((x) => x !== 'input_ids' && x !== 'attention_mask');

  const host = (x: NativeOutputs[string] | undefined): HostTensor => {
    expect(x).toBeDefined();
    expect(n.isDeviceValue(x)).toBe(false);
    return x as HostTensor;
  };
  const dev = (x: NativeOutputs[string] | undefined): DeviceValue => {
    expect(x).toBeDefined();
    expect(n.isDeviceValue(x)).toBe(true);
    return x as DeviceValue;
  };

  const toOrt = (feeds: Record<string, HostTensor>): Record<string, Tensor> =>
    Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, new ort.Tensor(t.type as 'float32', t.data as Float32Array, [...t.dims])]));

  const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
    expect(a.length).toBe(b.length);
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
    return d;
  };

  it('describes inputs and outputs as onnxruntime-common does', async () => {
    const s = await ort.InferenceSession.create(modelPath);
    expect(session.inputNames).toEqual(s.inputNames);
    expect(session.outputNames).toEqual(s.outputNames);
    const strip = (m: readonly ort.InferenceSession.ValueMetadata[]): unknown[] =>
      m.map((x) => (x.isTensor ? { name: x.name, isTensor: true, type: x.type, shape: [...x.shape] } : { name: x.name, isTensor: false }));
    expect(strip(session.inputMetadata as ort.InferenceSession.ValueMetadata[])).toEqual(strip(s.inputMetadata));
    expect(strip(session.outputMetadata as ort.InferenceSession.ValueMetadata[])).toEqual(strip(s.outputMetadata));
    expect(session.inputMetadata.find((m) => m.name === 'input_ids')).toMatchObject({ type: 'int64', shape: ['batch_size', 'sequence_length'] });
    expect(session.device).toBe('cpu');
    await s.release();
  });

  it('gives the logits and caches of onnxruntime-node', async () => {
    const feeds = { ...ids([[1, 50, 60, 7], [1, 9, 8, 7]]), ...emptyCaches(2) };
    const want = (await reference.run(toOrt(feeds))) as Record<string, Tensor>;
    const got = await session.run(feeds);
    expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
    for (const [name, t] of Object.entries(want)) {
      const g = host(got[name]);
      expect(g.type, name).toBe(t.type);
      expect(g.dims, name).toEqual(t.dims);
      expect(maxDiff(g.data as Float32Array, t.data as Float32Array), name).toBeLessThanOrEqual(1e-6);
    }
  });

  it('takes onnxruntime-common tensors as feeds', async () => {
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const a = await session.run(feeds, { outputs: ['logits'] });
    const b = await session.run(toOrt(feeds) as unknown as Record<string, HostTensor>, { outputs: ['logits'] });
    expect(Object.keys(a)).toEqual(['logits']);
    expect(host(b.logits).data).toEqual(host(a.logits).data);
  });

  it('decodes with cached device values as onnxruntime-node does with host caches', async () => {
    const prompt = [[1, 50, 60, 61, 62]];
    const caches = cacheInputs();
    const presents = caches.map(presentOf);

    // onnxruntime-node: prefill + two cached steps, caches through host memory.
    const wantLogits: Float32Array[] = [];
    let out = (await reference.run(toOrt({ ...ids(prompt), ...emptyCaches(1) }))) as Record<string, Tensor>;
    wantLogits.push(out.logits!.data as Float32Array);
    const steps = [[17], [23]];
    let total = prompt[0]!.length;
    for (const tok of steps) {
      total += 1;
      const feeds: Record<string, Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(tok, BigInt), [1, 1]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
      };
      caches.forEach((c, i) => (feeds[c] = out[presents[i]!]!));
      out = (await reference.run(feeds)) as Record<string, Tensor>;
      wantLogits.push(out.logits!.data as Float32Array);
    }

    // native: the caches stay as device values (CPU OrtValues here), fed back without a copy.
    let res = await session.run({ ...ids(prompt), ...emptyCaches(1) }, { deviceOutputs: presents });
    expect(maxDiff(host(res.logits).data as Float32Array, wantLogits[0]!)).toBeLessThanOrEqual(1e-6);
    total = prompt[0]!.length;
    for (const [s, tok] of steps.entries()) {
      total += 1;
      const feeds: Record<string, NativeFeed> = {
        input_ids: { type: 'int64', dims: [1, 1], data: BigInt64Array.from(tok, BigInt) },
        attention_mask: { type: 'int64', dims: [1, total], data: new BigInt64Array(total).fill(1n) },
      };
      const held = caches.map((c, i) => {
        const v = dev(res[presents[i]!]);
        feeds[c] = v;
        return v;
      });
      const next = await session.run(feeds, { deviceOutputs: presents });
      held.forEach((v) => v.dispose());
      res = next;
      expect(maxDiff(host(res.logits).data as Float32Array, wantLogits[s + 1]!)).toBeLessThanOrEqual(1e-6);
    }
    // The final caches, downloaded, equal onnxruntime-node's.
    for (const p of presents) {
      const v = dev(res[p]);
      expect(v.location).toBe('cpu');
      const d = v.download();
      expect(d.dims).toEqual(out[p]!.dims);
      expect(maxDiff(d.data as Float32Array, out[p]!.data as Float32Array), p).toBeLessThanOrEqual(1e-6);
      v.dispose();
    }
  });

  it('manages device values: metadata, download, dispose, use after dispose', async () => {
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const plain = await session.run(feeds);
    const res = await session.run(feeds, { deviceOutputs: ['present_conv.0', 'logits'] });
    const v = dev(res['present_conv.0']);
    const p = host(plain['present_conv.0']);
    expect(v).toMatchObject({ type: 'float32', dims: p.dims, location: 'cpu', deviceId: 0, disposed: false });
    expect(v.download().data).toEqual(p.data);
    expect(dev(res.logits).download().data).toEqual(host(plain.logits).data);
    v.dispose();
    expect(v.disposed).toBe(true);
    v.dispose(); // harmless
    expect(() => v.download()).toThrow(/disposed/);
    const again = { ...feeds, 'past_conv.0': v };
    await expect(session.run(again)).rejects.toMatchObject({ code: 'RUNTIME', message: expect.stringMatching(/past_conv\.0.*disposed/) });
    dev(res.logits).dispose();
    // The session still runs after the failure.
    expect(host((await session.run(feeds)).logits).data).toEqual(host(plain.logits).data);
  });

  it('keeps device values alive while a run that uses them is in flight', async () => {
    const caches = cacheInputs();
    const presents = caches.map(presentOf);
    const first = await session.run({ ...ids([[1, 50, 60]]), ...emptyCaches(1) }, { deviceOutputs: presents });
    const feeds: Record<string, NativeFeed> = {
      input_ids: { type: 'int64', dims: [1, 1], data: BigInt64Array.of(5n) },
      attention_mask: { type: 'int64', dims: [1, 4], data: new BigInt64Array(4).fill(1n) },
    };
    caches.forEach((c, i) => (feeds[c] = first[presents[i]!]!));
    const hostFeeds: Record<string, NativeFeed> = { ...feeds };
    caches.forEach((c, i) => (hostFeeds[c] = dev(first[presents[i]!]).download()));
    const want = host((await session.run(hostFeeds)).logits).data;
    const pending = session.run(feeds);
    caches.forEach((_, i) => dev(first[presents[i]!]).dispose()); // while the run is in flight
    expect(host((await pending).logits).data).toEqual(want);
  });

  it("says where each run's wall time went (lastRunTiming, microseconds)", async () => {
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const before = Date.now();
    await session.run(feeds);
    const elapsedUs = (Date.now() - before + 2) * 1000;
    const t = session.lastRunTiming!;
    const parts = ['wait', 'handOver', 'bind', 'run', 'sync', 'collect', 'handBack', 'settle'] as const;
    expect(Object.keys(t).sort()).toEqual([...parts].sort());
    for (const k of parts) {
      expect(Number.isFinite(t[k]), k).toBe(true);
      expect(t[k], k).toBeGreaterThanOrEqual(0);
    }
    // The parts follow each other: together no longer than the call took, and the run itself is not free.
    expect(parts.reduce((a, k) => a + t[k], 0)).toBeLessThanOrEqual(elapsedUs);
    expect(t.run).toBeGreaterThan(0);
    // A failed run leaves the previous timing in place.
    await expect(session.run({ ...feeds, input_ids: { type: 'int64', dims: [1, 3], data: new BigInt64Array([1n, 99999n, 2n]) } })).rejects.toThrow();
    expect(session.lastRunTiming).toEqual(t);
  });

  it('serialises concurrent runs of one session', async () => {
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const results = await Promise.all([session.run(feeds), session.run(feeds), session.run(feeds)]);
    for (const r of results.slice(1)) expect(host(r.logits).data).toEqual(host(results[0]!.logits).data);
  });

  it('honours session options: optimisation level, free dims, profiling', async () => {
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const want = host((await session.run(feeds)).logits).data as Float32Array;
    const s = await n.createSession(modelPath, {
      device: 'cpu',
      threads: 1,
      graphOptimizationLevel: 'disabled',
      freeDimensionOverrides: { batch_size: 1 },
      profileFile: join(dir, 'profile'),
      logSeverity: 3,
      config: { 'session.intra_op.allow_spinning': '0' },
    });
    const got = host((await s.run(feeds)).logits).data as Float32Array;
    expect(maxDiff(got, want)).toBeLessThanOrEqual(1e-5);
    const file = s.endProfiling();
    expect(file).toContain('profile');
    const profile = JSON.parse(readFileSync(file.startsWith('/') ? file : join(process.cwd(), file), 'utf8')) as unknown[];
    expect(Array.isArray(profile)).toBe(true);
    await s.release();
    expect(s.released).toBe(true);
  });

  it('keeps device values valid after their session is released', async () => {
    const s = await n.createSession(modelPath, { device: 'cpu', threads: 1 });
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const res = await s.run(feeds, { deviceOutputs: ['present_ssm.0'] });
    const want = host((await session.run(feeds))['present_ssm.0']).data;
    await s.release();
    await expect(s.run(feeds)).rejects.toMatchObject({ code: 'RUNTIME', message: expect.stringMatching(/released/) });
    const v = dev(res['present_ssm.0']);
    expect(v.download().data).toEqual(want);
    // …and can be fed to another session on the same device, as its host copy would be.
    const viaHandle = await session.run({ ...feeds, 'past_ssm.0': v }, { outputs: ['logits'] });
    const viaHost = await session.run({ ...feeds, 'past_ssm.0': v.download() }, { outputs: ['logits'] });
    expect(host(viaHandle.logits).data).toEqual(host(viaHost.logits).data);
    expect(host(viaHandle.logits).data).not.toEqual(host((await session.run(feeds)).logits).data);
    v.dispose();
  });

  it('hands large host outputs over without a copy: each run\'s arrays stay its own and outlive the session', async () => {
    // y = Expand(x, [2, 64, 1024]): 512 kB of fp32, above the size below which outputs are copied.
    const g = new GraphBuilder('fp32');
    g.output('y', g.op('Expand', [g.input('x', TensorDataType.FLOAT, [1]), g.ints([2, 64, 1024])]), TensorDataType.FLOAT, [2, 64, 1024]);
    await writeOnnx(g, dir, 'expand', { producerVersion: '0' });
    const s = await n.createSession(join(dir, 'expand.onnx'), { device: 'cpu', threads: 1 });
    const run = async (x: number): Promise<Float32Array> =>
      host((await s.run({ x: { type: 'float32', dims: [1], data: Float32Array.of(x) } })).y).data as Float32Array;
    const first = await run(1.5);
    const second = await run(2.5);
    await s.release();
    const third = await run(3.5).catch((e: unknown) => e);
    expect(third).toMatchObject({ code: 'RUNTIME' });
    expect(first.length).toBe(2 * 64 * 1024);
    expect(first.every((v) => v === 1.5)).toBe(true);
    expect(second.every((v) => v === 2.5)).toBe(true);
    // Writable like any array, and independent of the other run's.
    first[0] = 7;
    expect(second[0]).toBe(2.5);
  });

  it('finishes runs already started when the session is released', async () => {
    const s = await n.createSession(modelPath, { device: 'cpu', threads: 1 });
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const runs = [s.run(feeds), s.run(feeds)];
    await s.release();
    const want = host((await session.run(feeds)).logits).data;
    for (const r of await Promise.all(runs)) expect(host(r.logits).data).toEqual(want);
  });

  it('allocates zeroed values, writes into them (rows, offsets, pitch) and clears them', () => {
    const v = session.allocate('float32', [2, 3]);
    expect(v).toMatchObject({ type: 'float32', dims: [2, 3], location: 'cpu', disposed: false });
    expect(Array.from(v.download().data as Float32Array)).toEqual([0, 0, 0, 0, 0, 0]);
    v.write(Float32Array.of(1, 2, 3, 4, 5, 6));
    expect(Array.from(v.download().data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
    // Column 1 of both rows: rows of 1 element, 3 apart, from element 1.
    v.write(Float32Array.of(9, 8), 1, 1, 3);
    expect(Array.from(v.download().data as Float32Array)).toEqual([1, 9, 3, 4, 8, 6]);
    v.zero();
    expect(Array.from(v.download().data as Float32Array)).toEqual([0, 0, 0, 0, 0, 0]);
    // Reading part of a value: rows of `width` elements `pitch` apart.
    v.write(Float32Array.of(1, 2, 3, 4, 5, 6));
    expect(v.read(2, 1, 3, 2)).toMatchObject({ type: 'float32', dims: [2, 1], data: Float32Array.of(3, 6) });
    expect(Array.from(v.read(4).data as Float32Array)).toEqual([5, 6]);
    expect(Array.from(v.read().data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(() => v.read(2, 2, 3, 2)).toThrow(/overrun/);
    expect(() => v.read(0, 3, 2)).toThrow(/at least width/);
    v.zero();
    // A read of 64 kB or more hands its host buffer over instead of copying it: the same values, its own memory.
    const big = session.allocate('float32', [3, 20000]);
    big.write(Float32Array.from({ length: 60000 }, (_, i) => i));
    const rows = big.read(10, 19000, 20000, 3);
    expect(rows.dims).toEqual([3, 19000]);
    const data = rows.data as Float32Array;
    expect([data[0], data[18999], data[19000], data[2 * 19000 + 5]]).toEqual([10, 19009, 20010, 40015]);
    big.zero();
    expect(data[0]).toBe(10);
    big.dispose();
    const ids64 = session.allocate('int64', [4]);
    ids64.write(BigInt64Array.of(7n, 8n), 2);
    expect(Array.from(ids64.download().data as BigInt64Array)).toEqual([0n, 0n, 7n, 8n]);
    expect(() => v.write(Float32Array.of(1, 2, 3), 4)).toThrow(/overrun a value of 6 elements/);
    expect(() => v.write(Float32Array.of(1, 2), 5, 1, 3)).toThrow(/overrun/);
    expect(() => v.write(new Float64Array(2))).toThrow(/4-byte elements/);
    expect(() => v.write(Float32Array.of(1, 2, 3), 0, 2)).toThrow(/multiple of width/);
    expect(() => v.write(Float32Array.of(1, 2), 0, 2, 1)).toThrow(/at least width/);
    v.dispose();
    ids64.dispose();
    expect(() => v.write(Float32Array.of(1))).toThrow(/disposed/);
    expect(() => v.read()).toThrow(/disposed/);
    expect(() => session.allocate('string' as 'float32', [1])).toThrow(HubmoeError);
    expect(() => session.allocate('float32', [-1])).toThrow(/non-negative/);
  });

  it('writes bound outputs into the values given, and leaves them out of the result', async () => {
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    const name = session.outputNames.find((o) => o.startsWith('present_conv.'))!;
    const free = await session.run(feeds);
    const want = host(free[name]);
    const into = session.allocate('float32', want.dims);
    const got = await session.run(feeds, { bind: { [name]: into }, outputs: ['logits'] });
    expect(Object.keys(got)).toEqual(['logits']);
    expect(host(got.logits).data).toEqual(host(free.logits).data);
    expect(into.download().data).toEqual(want.data);
    // The bound value feeds a later run like any device value.
    const next = await session.run({ ...feeds, [cacheInputs().find((c) => presentOf(c) === name)!]: into }, { outputs: ['logits'] });
    expect(host(next.logits).dims).toEqual([1, 3, host(free.logits).dims[2]]);
    into.dispose();
    await expect(session.run(feeds, { bind: { nope: into } })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/no output 'nope'/) });
    await expect(session.run(feeds, { bind: { [name]: feeds.input_ids as unknown as DeviceValue } })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/must be a device value/) });
    await expect(session.run(feeds, { bind: { [name]: into } })).rejects.toMatchObject({ message: expect.stringMatching(/was disposed/) });
    // CUDA graphs are for sessions created with enable_cuda_graph.
    await expect(session.run(feeds, { graphId: 1 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/enable_cuda_graph/) });
    await expect(session.run(feeds, { graphId: -3 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/graphId/) });
    expect(host((await session.run(feeds, { graphId: -1 })).logits).data).toEqual(host(free.logits).data);
  });

  it('reports bad feeds and options as BAD_ARGUMENT', async () => {
    const feeds = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    await expect(session.run({ ...feeds, nope: feeds.input_ids })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/no input 'nope'/) });
    const badType = { ...feeds, input_ids: { type: 'int64', dims: [1, 3], data: new Float32Array(3) } as unknown as HostTensor };
    await expect(session.run(badType)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/BigInt64Array/) });
    const badDims = { ...feeds, input_ids: { type: 'int64', dims: [1, 4], data: new BigInt64Array(3) } as HostTensor };
    await expect(session.run(badDims)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/4 elements/) });
    await expect(session.run(feeds, { deviceOutputs: ['nope'] })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/no output 'nope'/) });
    await expect(n.createSession(modelPath, { device: 'cpu', graphOptimizationLevel: 'max' as 'all' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(n.createSession(modelPath, { device: 'tpu' as 'cpu' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
  });

  it('reports ONNX Runtime failures as RUNTIME errors with its message', async () => {
    const { attention_mask, ...noIds } = { ...ids([[1, 50, 60]]), ...emptyCaches(1) };
    void attention_mask;
    await expect(session.run(noIds)).rejects.toMatchObject({ code: 'RUNTIME', message: expect.stringMatching(/attention_mask/) });
    const outOfRange = { ...ids([[1, 50, 10 ** 9]]), ...emptyCaches(1) };
    await expect(session.run(outOfRange)).rejects.toBeInstanceOf(HubmoeError);
  });

  it('fails clearly on missing and broken files', async () => {
    await expect(n.createSession(join(dir, 'missing.onnx'), { device: 'cpu' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const junk = join(dir, 'junk.onnx');
    await writeFile(junk, 'not a model');
    await expect(n.createSession(junk, { device: 'cpu' })).rejects.toMatchObject({ code: 'RUNTIME', message: expect.stringMatching(/could not load .*junk\.onnx/) });
    await expect(n.createSession(modelPath, { device: 'cpu', customOpsLibrary: join(dir, 'nope.so') })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(n.createSession(modelPath, { device: 'cpu', customOpsLibrary: 'relative.so' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(n.createSession(modelPath, { device: 'cpu', customOpsLibrary: junk })).rejects.toMatchObject({
      code: 'NATIVE',
      message: expect.stringMatching(/custom-op library .*junk\.onnx/),
    });
  });

  it('fails clearly when CUDA is not available', async () => {
    if (n.providers().includes('CUDAExecutionProvider') && process.env.HUBMOE_TEST_GPU) return; // a GPU machine: see bench/native-cuda-check.mjs
    const err = await n.createSession(modelPath, { device: 'cuda', cudaOptions: { arena_extend_strategy: 'kSameAsRequested', use_tf32: false } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HubmoeError);
    expect(err).toMatchObject({ code: 'RUNTIME', message: expect.stringMatching(/CUDA execution provider.*libonnxruntime_providers_cuda\.so/s) });
  });

  it('createNativeSession creates sessions through the loaded binding', async () => {
    const s = await createNativeSession(modelPath, { device: 'cpu', threads: 1 });
    expect(s.inputNames).toEqual(session.inputNames);
    await s.release();
  });
});
