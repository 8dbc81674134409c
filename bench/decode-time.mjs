/**
 * The time per decode step of one greedy generation, shared by the decode benches: from the prefill's token to the
 * last step's token (as `onToken` sees them for row `row`), over the `steps` steps between. Greedy decoding inside
 * the native addon hands the tokens over a call at a time, so single steps are not seen; the generation's span is.
 * `onFirst` runs when the prefill's token arrives (to start counting what the steps do).
 */
export async function decodeMsPerStep(model, prompts, steps, { row = 0, onFirst } = {}) {
  let first = 0;
  let last = 0;
  await model.generate(prompts, {
    maxNewTokens: steps + 1,
    ignoreEos: true,
    onToken: (e) => {
      if (e.row !== row) return;
      if (e.step === 0) {
        onFirst?.();
        first = performance.now();
      }
      last = performance.now();
    },
  });
  return (last - first) / steps;
}
