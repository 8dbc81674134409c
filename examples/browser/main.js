// hubmoe + transformers.js in the browser. The import of 'hubmoe/transformers' is what makes
// transformers.js load hubmoe model dirs; everything after it is plain transformers.js.
import { installation } from 'hubmoe/transformers';
import { AutoModelForCausalLM, Tensor, TextStreamer, env, pipeline } from '@huggingface/transformers';

// Model dirs are served from /models/<name>/ (serve.mjs); nothing is fetched from the Hub.
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/'; // a path, not a URL: transformers.js checks local files only for paths
env.useBrowserCache = false;
// onnxruntime-web's WASM binaries, served locally instead of from a CDN.
env.backends.onnx.wasm.wasmPaths = new URL('/vendor/ort/', location.href).href;

const $ = (id) => document.getElementById(id);
const status = (text) => ($('status').textContent = text);

/** Greedy generation from token ids (for models without a tokenizer, and for the automated test). */
async function generateIds(model, device, ids, maxNewTokens) {
  const lm = await AutoModelForCausalLM.from_pretrained(model, { device, dtype: 'fp32' });
  try {
    const out = await lm.generate({
      input_ids: new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]),
      attention_mask: new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
      max_new_tokens: maxNewTokens,
      do_sample: false,
      eos_token_id: [], // exactly maxNewTokens tokens
    });
    return { tokens: out.tolist()[0].slice(ids.length).map(Number) };
  } finally {
    await lm.dispose();
  }
}

const generators = new Map();

/** Text generation with the pipeline API, streaming into the page. */
async function generateText(model, device, prompt, maxNewTokens, { ignoreEos = false } = {}) {
  const key = `${model}|${device}`;
  if (!generators.has(key)) generators.set(key, pipeline('text-generation', model, { device, dtype: 'fp32' }));
  const generator = await generators.get(key);
  const tokens = [];
  $('output').textContent = '';
  const streamer = new TextStreamer(generator.tokenizer, {
    skip_prompt: true,
    callback_function: (text) => ($('output').textContent += text),
    token_callback_function: (t) => tokens.push(...t.map(Number)),
  });
  const [out] = await generator(prompt, {
    max_new_tokens: maxNewTokens,
    do_sample: false,
    return_full_text: false,
    streamer,
    ...(ignoreEos ? { eos_token_id: [] } : {}),
  });
  return { text: out.generated_text, tokens };
}

async function automated(params) {
  const model = params.get('model') ?? 'jamba-demo';
  const device = params.get('device') ?? 'wasm';
  const n = Number(params.get('n') ?? 8);
  const started = performance.now();
  try {
    const result = params.has('ids')
      ? await generateIds(model, device, params.get('ids').split(',').map(Number), n)
      : await generateText(model, device, params.get('prompt') ?? 'The jury said', n, { ignoreEos: true });
    window.hubmoeResult = { ok: true, model, device, ...result, ms: Math.round(performance.now() - started), installation };
  } catch (err) {
    window.hubmoeResult = { ok: false, model, device, error: String(err?.stack ?? err) };
  }
  status(window.hubmoeResult.ok ? 'done' : `failed: ${window.hubmoeResult.error}`);
}

const params = new URLSearchParams(location.search);
if (params.has('model') || params.has('ids')) {
  await automated(params);
} else {
  if (!navigator.gpu) $('device').querySelector('[value=webgpu]').disabled = true;
  status('ready');
  $('go').disabled = false;
  $('form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('go').disabled = true;
    status('generating…');
    const started = performance.now();
    try {
      const { tokens } = await generateText($('model').value, $('device').value, $('prompt').value, Number($('tokens').value));
      status(`${tokens.length} tokens in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    } catch (err) {
      status(`failed: ${err}`);
    } finally {
      $('go').disabled = false;
    }
  });
}
