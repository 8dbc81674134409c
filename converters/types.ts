/**
 * The contract of a family converter: recognise a source config, map it to a ModelSpec, and map the
 * source's tensor names onto canonical tensors. A converter never touches ONNX.
 */
import type { TensorSource } from '../src/io/checkpoint.js';
import type { CanonicalTensors } from '../src/schema/canonical.js';
import type { Activation, Family, ModelSpec } from '../src/schema/spec.js';

export type JsonObject = Record<string, unknown>;

export interface ConverterOptions {
  /** Override of the expert activation (BlackMamba: the paper's SwiGLU vs the code's erf GELU). */
  expertAct?: Activation;
}

export interface SourceConfig {
  /** The parsed config.json. */
  config: JsonObject;
  /** Where it came from, for messages (e.g. `/path/config.json` or `repo@sha/config.json`). */
  where: string;
  /** Every file in the source. */
  files: string[];
}

export interface FamilyConverter {
  family: Family;
  /** What users call the architectures this converter reads (listed when detection fails). */
  architectures: string[];
  detect(src: SourceConfig): boolean;
  /** Hub repo of the tokenizer the family uses when a checkpoint ships none. */
  tokenizerRepo?: string;
  /** The spec, with `source` holding only what the config says (convert fills in files and revision). */
  toSpec(src: SourceConfig, options: ConverterOptions): ModelSpec;
  tensors(spec: ModelSpec, source: TensorSource, src: SourceConfig): CanonicalTensors;
}
