/**
 * One base error for the whole project. Subclasses carry structured fields and build their default
 * message from them, so a one-line message names the bad file, field or line.
 *
 * The CLI prints `error.message` (no stack) for any MatpoError and exits with code 1; anything else
 * is a bug and is printed with its stack.
 */
export class MatpoError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A configuration value is missing or invalid. `path` is the dotted field path ("rl.loss.clipLow"). */
export class ConfigError extends MatpoError {
  readonly path: string;
  readonly file?: string;
  constructor(args: { path: string; message: string; file?: string; cause?: unknown }) {
    super('config', `${args.file ? `${args.file}: ` : ''}${args.path ? `${args.path}: ` : ''}${args.message}`, { cause: args.cause });
    this.path = args.path;
    this.file = args.file;
  }
}

/** A file could not be read or has bad content. `line` is 1-based when the file is line-oriented. */
export class FileFormatError extends MatpoError {
  readonly file: string;
  readonly line?: number;
  readonly field?: string;
  constructor(args: { file: string; message: string; line?: number; field?: string; cause?: unknown }) {
    const where = `${args.file}${args.line !== undefined ? `:${args.line}` : ''}`;
    super('file-format', `${where}: ${args.field ? `field "${args.field}": ` : ''}${args.message}`, { cause: args.cause });
    this.file = args.file;
    this.line = args.line;
    this.field = args.field;
  }
}

/** A name was looked up in a registry (loss, estimator, tool, preset, …) and is not there. */
export class UnknownNameError extends MatpoError {
  readonly kind: string;
  readonly nameGiven: string;
  readonly available: readonly string[];
  constructor(args: { kind: string; name: string; available: readonly string[] }) {
    super('unknown-name', `unknown ${args.kind} "${args.name}"; available: ${args.available.join(', ') || '(none)'}`);
    this.kind = args.kind;
    this.nameGiven = args.name;
    this.available = args.available;
  }
}

/** A remote endpoint (inference server, web API) failed. */
export class EndpointError extends MatpoError {
  readonly url: string;
  readonly status?: number;
  constructor(args: { url: string; message: string; status?: number; cause?: unknown }) {
    super('endpoint', `${args.url}: ${args.status !== undefined ? `HTTP ${args.status}: ` : ''}${args.message}`, { cause: args.cause });
    this.url = args.url;
    this.status = args.status;
  }
}

/** Invalid arguments to an API (shape mismatch, out-of-range token id, …). */
export class InvalidArgumentError extends MatpoError {
  readonly argument: string;
  constructor(argument: string, message: string) {
    super('invalid-argument', `${argument}: ${message}`);
    this.argument = argument;
  }
}
