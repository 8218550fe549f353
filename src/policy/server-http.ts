/**
 * The HTTP plumbing of `servePolicy`: OpenAI-shaped errors, JSON bodies in and out, and
 * Server-Sent Events for `stream: true`.
 *
 * Errors are `{ error: { message, type, param, code } }` with `param` the request's own field
 * (`prompt`, `messages[2].content`). An SSE response is `content-type: text/event-stream`, one
 * `data: {json}\n\n` event per chunk and `data: [DONE]\n\n` at the end, as OpenAI and vLLM send it;
 * an error after the stream started is sent as one `data: {"error": …}` event before `[DONE]`.
 */
import type http from 'node:http';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

/** A 400 naming the request field `param`: "param: message". */
export function badField(param: string, message: string): HttpError {
  return new HttpError(400, `${param}: ${message}`, 'invalid_request_error', param);
}

export async function readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, `request body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
}

export function send(res: http.ServerResponse, status: number, body: unknown, close = false): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
  if (close) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(text);
}

export function errorBody(err: HttpError): { error: { message: string; type: string; param: string | null; code: string | number } } {
  return { error: { message: err.message, type: err.type, param: err.param, code: err.code ?? err.status } };
}

export function sendError(res: http.ServerResponse, err: HttpError): void {
  if (res.headersSent) {
    // The stream already started: the error goes in-band, then the stream ends.
    if (!res.destroyed && !res.writableEnded) {
      res.write(`data: ${JSON.stringify(errorBody(err))}\n\n`);
      res.end('data: [DONE]\n\n');
    }
    return;
  }
  send(res, err.status, errorBody(err));
}

/** An SSE response: `event(obj)` writes one `data:` event; `done()` writes `[DONE]` and ends it. */
export class EventStream {
  constructor(
    private readonly res: http.ServerResponse,
    close: boolean,
  ) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...(close ? { connection: 'close' } : {}) });
  }

  event(body: unknown): void {
    if (!this.res.destroyed && !this.res.writableEnded) this.res.write(`data: ${JSON.stringify(body)}\n\n`);
  }

  done(): void {
    if (!this.res.destroyed && !this.res.writableEnded) this.res.end('data: [DONE]\n\n');
  }
}
