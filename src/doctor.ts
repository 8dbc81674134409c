/**
 * doctor(): what this installation can run, and how to get what is missing — onnxruntime-node,
 * its CUDA execution provider, hubmoe's native addon and custom-op libraries, and the GPU.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { customOpsLibrary } from '../runtime/backend.js';
import { nativeStatus, onnxruntimeLibraryPath } from '../runtime/native/index.js';
import { VERSION } from './version.js';

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do when not ok. */
  fix?: string;
}

export interface DoctorReport {
  hubmoe: string;
  node: string;
  checks: DoctorCheck[];
  /** What runs here: targets × devices. */
  capabilities: { portableCpu: boolean; portableCuda: boolean; fusedCpu: boolean; fusedCuda: boolean; cachesOnGpu: boolean };
}

function gpu(): { ok: boolean; detail: string } {
  const r = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], { encoding: 'utf-8' });
  if (r.status === 0 && r.stdout.trim()) return { ok: true, detail: r.stdout.trim().split('\n').join('; ') };
  return { ok: false, detail: r.error ? 'nvidia-smi not found' : (r.stderr || 'no GPU reported').trim() };
}

export function doctor(): DoctorReport {
  const checks: DoctorCheck[] = [];
  let ortLib = '';
  try {
    ortLib = onnxruntimeLibraryPath();
    checks.push({ name: 'onnxruntime-node', ok: existsSync(ortLib), detail: ortLib });
  } catch (err) {
    checks.push({ name: 'onnxruntime-node', ok: false, detail: (err as Error).message, fix: 'npm install (onnxruntime-node 1.30.0)' });
  }
  const cudaEp = ortLib ? `${dirname(ortLib)}/libonnxruntime_providers_cuda.so` : '';
  const hasCudaEp = Boolean(cudaEp) && existsSync(cudaEp);
  checks.push({
    name: 'CUDA execution provider',
    ok: hasCudaEp,
    detail: hasCudaEp ? cudaEp : `no libonnxruntime_providers_cuda.so next to ${ortLib || 'libonnxruntime.so.1'}`,
    fix: 'place the ONNX Runtime CUDA 13 provider libraries (libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so) there and the CUDA 13 runtime on LD_LIBRARY_PATH (docs/cuda.md)',
  });
  const native = nativeStatus();
  checks.push({
    name: 'native addon',
    ok: native.addon,
    detail: native.addon ? `${native.path} (ONNX Runtime ${native.ortVersion}, API ${native.apiVersion}; providers ${native.providers?.join(', ')})` : (native.reason ?? 'not built'),
    fix: 'npm run build:native (needs g++, make and apt access to Debian for the ONNX Runtime headers)',
  });
  const cpuOps = customOpsLibrary('cpu');
  const cudaOps = customOpsLibrary('cuda');
  checks.push({ name: 'custom-op library (CPU)', ok: existsSync(cpuOps), detail: cpuOps, fix: 'npm run build:native' });
  checks.push({ name: 'custom-op library (CUDA)', ok: existsSync(cudaOps), detail: cudaOps, fix: 'npm run build:native on a machine with nvcc (CUDA 13)' });
  const g = gpu();
  checks.push({ name: 'GPU', ok: g.ok, detail: g.detail, fix: 'an NVIDIA GPU with driver ≥ 580 (CUDA 13)' });
  const ok = (n: string): boolean => checks.find((c) => c.name === n)?.ok ?? false;
  return {
    hubmoe: VERSION,
    node: process.version,
    checks,
    capabilities: {
      portableCpu: ok('onnxruntime-node'),
      portableCuda: ok('onnxruntime-node') && ok('CUDA execution provider') && ok('GPU'),
      fusedCpu: ok('native addon') && ok('custom-op library (CPU)'),
      fusedCuda: ok('native addon') && ok('custom-op library (CUDA)') && ok('CUDA execution provider') && ok('GPU'),
      cachesOnGpu: ok('native addon') && ok('CUDA execution provider') && ok('GPU'),
    },
  };
}

export function formatDoctor(r: DoctorReport): string {
  const lines = [`hubmoe ${r.hubmoe}, Node ${r.node}`, ''];
  for (const c of r.checks) {
    lines.push(`${c.ok ? 'ok     ' : 'missing'}  ${c.name}: ${c.detail}`);
    if (!c.ok && c.fix) lines.push(`         → ${c.fix}`);
  }
  const cap = r.capabilities;
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  lines.push(
    '',
    `portable target on CPU:  ${yes(cap.portableCpu)}`,
    `portable target on CUDA: ${yes(cap.portableCuda)}${cap.portableCuda && !cap.cachesOnGpu ? ' (caches through host memory)' : ''}`,
    `fused target on CPU:     ${yes(cap.fusedCpu)}`,
    `fused target on CUDA:    ${yes(cap.fusedCuda)}`,
    `caches kept on the GPU:  ${yes(cap.cachesOnGpu)}`,
  );
  return lines.join('\n');
}
