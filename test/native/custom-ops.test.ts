/**
 * The native backend's customOpsLibrary path (RegisterCustomOpsLibrary_V2), with a tiny op library
 * (fixtures/test_ops.cc, ai.hubmoe.test:Scale2) built here with g++ against the ORT headers that
 * `npm run build:native` fetched. Stock onnxruntime-node cannot run such a model at all.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeModel, TensorDataType } from '../../src/onnx/proto.js';
import { PACKAGE_ROOT } from '../../src/version.js';
import { loadNative } from '../../runtime/native/index.js';
import type { HostTensor } from '../../runtime/native/index.js';
import { tempDir } from '../helpers.js';

const native = loadNative();
const ORT_INCLUDE = process.env.HUBMOE_ORT_INCLUDE ?? join(PACKAGE_ROOT, 'runtime', 'native', 'build', 'ort', 'usr', 'include', 'onnxruntime');
const skip = !process.env.CI && (!native || !existsSync(join(ORT_INCLUDE, 'onnxruntime_lite_custom_op.h')));

describe.skipIf(skip)('custom-op libraries on the native backend', () => {
  let dir: string;
  let lib: string;
  let model: string;

  beforeAll(async () => {
    dir = await tempDir('hubmoe-native-ops-');
    lib = join(dir, 'libtest_ops.so');
    execFileSync('g++', ['-std=c++17', '-O1', '-shared', '-fPIC', '-fvisibility=hidden', `-I${ORT_INCLUDE}`, '-o', lib, join(import.meta.dirname, 'fixtures', 'test_ops.cc')], {
      stdio: 'pipe',
    });
    model = join(dir, 'scale2.onnx');
    await writeFile(
      model,
      encodeModel({
        irVersion: 10,
        opsets: [
          { domain: '', version: 21 },
          { domain: 'ai.hubmoe.test', version: 1 },
        ],
        producerName: 'hubmoe-test',
        producerVersion: '0',
        metadata: {},
        graph: {
          name: 'scale2',
          nodes: [{ name: 'scale', opType: 'Scale2', domain: 'ai.hubmoe.test', inputs: ['x'], outputs: ['y'], attributes: [] }],
          initializers: [],
          inputs: [{ name: 'x', elemType: TensorDataType.FLOAT, shape: ['n'] }],
          outputs: [{ name: 'y', elemType: TensorDataType.FLOAT, shape: ['n'] }],
        },
      }),
    );
  });

  it('runs a model with the library’s op, which onnxruntime-node rejects', async () => {
    await expect(ort.InferenceSession.create(model)).rejects.toThrow(/Scale2/);
    const s = await native!.createSession(model, { device: 'cpu', customOpsLibrary: lib });
    const x: HostTensor = { type: 'float32', dims: [3], data: Float32Array.of(1.5, -2, 3) };
    const out = await s.run({ x });
    expect(out.y).toMatchObject({ type: 'float32', dims: [3] });
    expect(Array.from((out.y as HostTensor).data as Float32Array)).toEqual([3, -4, 6]);
    // Two sessions may register the same library.
    const s2 = await native!.createSession(model, { device: 'cpu', customOpsLibrary: lib });
    expect(Array.from(((await s2.run({ x })).y as HostTensor).data as Float32Array)).toEqual([3, -4, 6]);
    await s.release();
    await s2.release();
  });

  it('fails clearly without the library', async () => {
    await expect(native!.createSession(model, { device: 'cpu' })).rejects.toMatchObject({ code: 'RUNTIME', message: expect.stringMatching(/Scale2/) });
  });
});
