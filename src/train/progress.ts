/**
 * Progress bars with ETA for the long phases (training steps, rollouts, evaluation, SFT epochs),
 * on stderr through cli-progress. Disabled (log lines only) when stderr is not a terminal or the
 * caller turns it off, so logs of batch jobs and tests stay clean.
 */
import cliProgress from 'cli-progress';

export interface Bar {
  update(value: number, payload?: Record<string, string | number>): void;
  setTotal(total: number): void;
  stop(): void;
}

export class Progress {
  private multi: cliProgress.MultiBar | null;
  constructor(
    enabled: boolean,
    private readonly logLine: (line: string) => void = (l) => process.stderr.write(l + '\n'),
  ) {
    this.multi =
      enabled && process.stderr.isTTY
        ? new cliProgress.MultiBar(
            {
              format: '{label} |{bar}| {value}/{total} {info} eta {eta_formatted}',
              hideCursor: true,
              clearOnComplete: true,
              stream: process.stderr,
              etaBuffer: 20,
            },
            cliProgress.Presets.shades_classic,
          )
        : null;
  }

  bar(label: string, total: number, start = 0): Bar {
    if (!this.multi) return { update() {}, setTotal() {}, stop() {} };
    const multi = this.multi;
    const b = multi.create(total, start, { label: label.padEnd(9), info: '' });
    return {
      update: (value, payload) =>
        b.update(value, {
          info: payload
            ? Object.entries(payload)
                .map(([k, v]) => `${k} ${v}`)
                .join(' ')
            : '',
        }),
      setTotal: (t) => b.setTotal(t),
      stop: () => {
        b.stop();
        multi.remove(b);
      },
    };
  }

  log(line: string): void {
    if (this.multi) this.multi.log(line + '\n');
    else this.logLine(line);
  }

  stop(): void {
    this.multi?.stop();
  }
}
