import { describe, expect, it } from 'vitest';
import { HubmoeError } from '../../src/errors.js';
import { makeRng, pickToken, sampleBySorting, validateSampling } from '../../runtime/sampling.js';

const logits = (): Float32Array => Float32Array.from([1, 4, 2, 3.5, -1, 9]);

function histogram(opts: Parameters<typeof pickToken>[3], n = 4000, vocab = 5): number[] {
  const rng = makeRng(7);
  const h = new Array(6).fill(0);
  for (let i = 0; i < n; i++) h[pickToken(logits(), vocab, [], opts, rng)]++;
  return h;
}

describe('sampling', () => {
  it('greedy takes the argmax within the tokenizer vocabulary (padding ids never win)', () => {
    expect(pickToken(logits(), 6, [], {}, makeRng(1))).toBe(5);
    expect(pickToken(logits(), 5, [], {}, makeRng(1))).toBe(1);
  });

  it('applies the repetition penalty as transformers does (divide positives, multiply negatives)', () => {
    const l = logits();
    expect(pickToken(l, 5, [1], { repetitionPenalty: 2 }, makeRng(1))).toBe(3);
    expect(l[1]).toBe(2);
    const neg = Float32Array.from([-1, -2]);
    pickToken(neg, 2, [0], { repetitionPenalty: 3 }, makeRng(1));
    expect(neg[0]).toBe(-3);
  });

  it('top-k 1 is greedy; top-k 2 draws only the two best', () => {
    expect(histogram({ temperature: 1, topK: 1 })).toEqual([0, 4000, 0, 0, 0, 0]);
    const h = histogram({ temperature: 1, topK: 2 });
    expect(h[0]! + h[2]! + h[4]! + h[5]!).toBe(0);
    // p(1)/p(3) = e^0.5 ≈ 1.65
    expect(h[1]! / h[3]!).toBeGreaterThan(1.4);
    expect(h[1]! / h[3]!).toBeLessThan(1.9);
  });

  it('top-p keeps the smallest set reaching the mass', () => {
    // softmax of [1,4,2,3.5,-1]: 4 → 0.53, 3.5 → 0.32: top-p 0.6 keeps ids 1 and 3.
    const h = histogram({ temperature: 1, topP: 0.6 });
    expect(h[0]! + h[2]! + h[4]!).toBe(0);
    expect(h[1]! + h[3]!).toBe(4000);
  });

  it('a high temperature flattens the distribution, a low one sharpens it', () => {
    const hot = histogram({ temperature: 100 });
    const cold = histogram({ temperature: 0.05 });
    expect(Math.min(...hot.slice(0, 5))).toBeGreaterThan(600);
    expect(cold[1]).toBe(4000);
  });

  it('is reproducible with a seed', () => {
    const a = Array.from({ length: 20 }, (_, i) => pickToken(logits(), 5, [], { temperature: 1 }, makeRng(42 + (i % 1))));
    const b = Array.from({ length: 20 }, (_, i) => pickToken(logits(), 5, [], { temperature: 1 }, makeRng(42 + (i % 1))));
    expect(a).toEqual(b);
  });

  it('draws as a full sort of the vocabulary would, with a fraction of the order computed', () => {
    // Against the definition computed the plain way (sampleBySorting: every candidate sorted): the same draws for
    // the same random numbers.
    const gen = makeRng(2024);
    const V = 3000;
    // Peaked and flat rows, with ties (values rounded to quarters), −∞ entries and padding past the vocabulary.
    const rows = [0.5, 3, 12].map((spread) =>
      Float32Array.from({ length: V + 8 }, (_, i) => (i % 97 === 5 ? -Infinity : Math.round((gen() - 0.5) * spread * 4) / 4)),
    );
    const options = [
      { temperature: 1 },
      { temperature: 0.7, topP: 0.9 },
      { temperature: 1.3, topP: 0.3 },
      { temperature: 1, topK: 40 },
      { temperature: 0.5, topK: 1 },
      { temperature: 1, topK: 7, topP: 0.8 },
      { temperature: 2, topK: V + 100 },
    ];
    let draws = 0;
    for (const row of rows)
      for (const o of options)
        for (let seed = 0; seed < 40; seed++) {
          const want = sampleBySorting(row.slice(), V, o, makeRng(seed));
          expect(pickToken(row.slice(), V, [], o, makeRng(seed))).toBe(want);
          draws++;
        }
    expect(draws).toBe(840);
    // Every candidate −∞: the first id, as greedy decoding gives.
    expect(pickToken(Float32Array.of(-Infinity, -Infinity), 2, [], { temperature: 1 }, makeRng(1))).toBe(0);
  });

  it.each([{ temperature: -1 }, { topK: 1.5 }, { topP: 0 }, { topP: 1.5 }, { repetitionPenalty: 0 }])('rejects %j', (o) => {
    expect(() => validateSampling(o)).toThrow(HubmoeError);
  });
});
