/**
 * A CLI subcommand. Each lives in `src/cli/commands/<name>.ts` and exports `command`.
 * Argument parsing uses node's util.parseArgs; a bad flag is a one-line error naming the flag.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../core/errors.ts';

export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number | void>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with errors turned into one-line ConfigErrors naming the flag. */
export function parseFlags<O extends Options>(argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    // node's message runs over several lines (e.g. a value starting with "-"): joined into one
    const message = (err as Error).message
      .replace(/^TypeError \[[A-Z_]+\]: /, '')
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .join(' ');
    throw new ConfigError({ path: '', message });
  }
}

/** Read a required string flag or throw naming it. */
export function required(values: Record<string, unknown>, flag: string): string {
  const v = values[flag];
  if (typeof v !== 'string' || v === '') throw new ConfigError({ path: `--${flag}`, message: 'is required' });
  return v;
}

/** Parse an integer flag, naming it on error. */
export function intFlag(values: Record<string, unknown>, flag: string, fallback: number): number {
  const v = values[flag];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new ConfigError({ path: `--${flag}`, message: `expected an integer, got "${String(v)}"` });
  return n;
}

/** Parse a number flag, naming it on error. */
export function numFlag(values: Record<string, unknown>, flag: string, fallback: number): number {
  const v = values[flag];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new ConfigError({ path: `--${flag}`, message: `expected a number, got "${String(v)}"` });
  return n;
}

/** A flag naming one of `choices` (the first is the default): its name and value, naming the choices on error. */
export function choiceFlag<T>(values: Record<string, unknown>, flag: string, choices: Record<string, T>): { name: string; value: T } {
  const names = Object.keys(choices);
  const name = values[flag] === undefined ? names[0] : String(values[flag]);
  if (!Object.hasOwn(choices, name)) throw new ConfigError({ path: `--${flag}`, message: `expected ${names.join(', ')}; got "${name}"` });
  return { name, value: choices[name] };
}
