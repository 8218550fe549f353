/**
 * Grounding of reports: does an agent's report rest on what its own tools returned to it?
 *
 * Definitions (all on the records of scored or unscored rollouts):
 * - Reports: in planner–worker rollouts, each worker sequence whose outcome is `answered`; its report
 *   is the text of its last assistant message. In single-agent rollouts, the root sequence when it
 *   answered, its report being its last assistant message. (The planner is not a reporter: it reads
 *   worker reports, not tool output.)
 * - Tool output of a sequence: the `result` text of every tool call in its turns, joined by newlines
 *   (error texts are excluded — they quote what the model asked for, not what the corpus holds).
 * - Claims of a report:
 *   - cited document ids: every `Document <id>` / `document <id>` and every `[<id>]` in the report,
 *     where an id is a run of letters, digits, `_` or `-` containing a digit (d12, doc-7);
 *   - the stated value: in the line starting `Conclusion:`, the text after the last " is " up to the
 *     end of the line, without a final period; else the content of the last `\boxed{...}`; else none.
 * - An id appears in the tool output when it occurs there as a whole word (not inside a longer id:
 *   d1 is not found in "d12"). A value appears when the tool output contains it, compared case-
 *   insensitively with runs of white space made single spaces.
 * - A report is *grounded* when it makes at least one claim and every claim appears in the tool
 *   output of its own sequence. Reports without a claim ("I could not find ...") are counted apart.
 * - grounding = grounded reports / reports with a claim (NaN when none claims anything), pooled over
 *   all reports of all given rollouts (not averaged per rollout).
 *
 * This measures whether the report could have been copied from the context, not whether the copied
 * value is the right one (a worker that copies a distractor's value is grounded and wrong), and a
 * short value such as a year may appear in the tool output by coincidence.
 */
import type { Rollout, Sequence } from '../core/records.ts';

export interface ReportClaims {
  docIds: string[];
  value: string | null;
}

export interface GroundingStats {
  /** Reports examined (answered workers, or answered single agents). */
  reports: number;
  /** Reports with at least one claim. */
  claiming: number;
  /** Claiming reports whose every claim appears in their own tool output. */
  grounded: number;
  /** grounded / claiming; NaN when no report claims anything. */
  rate: number;
}

const ID = '([A-Za-z0-9_-]*\\d[A-Za-z0-9_-]*)';
const DOC_RE = new RegExp(`\\b[Dd]ocument\\s+${ID}`, 'g');
const BRACKET_RE = new RegExp(`\\[${ID}\\]`, 'g');

const normalise = (s: string) => s.replace(/\s+/g, ' ').trim().toLowerCase();

/** The claims a report makes (see the definitions above). */
export function reportClaims(report: string): ReportClaims {
  const docIds: string[] = [];
  for (const re of [DOC_RE, BRACKET_RE]) {
    for (const m of report.matchAll(re)) {
      const id = m[1].replace(/[-_]+$/, '');
      if (!docIds.includes(id)) docIds.push(id);
    }
  }
  let value: string | null = null;
  const conclusion = report.split('\n').find((l) => /^\s*Conclusion:/i.test(l));
  if (conclusion !== undefined) {
    const k = conclusion.lastIndexOf(' is ');
    if (k >= 0)
      value =
        conclusion
          .slice(k + 4)
          .trim()
          .replace(/\.$/, '')
          .trim() || null;
  } else {
    const boxed = [...report.matchAll(/\\boxed\{([^{}]*)\}/g)].at(-1);
    if (boxed) value = boxed[1].trim() || null;
  }
  return { docIds, value };
}

/** The text the sequence's tools returned to it (results only, not error texts). */
export function toolOutputText(seq: Sequence): string {
  return seq.turns
    .flatMap((t) => t.toolCalls.filter((c) => c.error === undefined && typeof c.result === 'string').map((c) => c.result!))
    .join('\n');
}

function idAppears(id: string, text: string): boolean {
  const escaped = id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^A-Za-z0-9_-])${escaped}($|[^A-Za-z0-9_-])`).test(text);
}

/** Whether one report is grounded in the given tool output; null when it claims nothing. */
export function isGrounded(report: string, toolOutput: string): boolean | null {
  const c = reportClaims(report);
  if (c.docIds.length === 0 && c.value === null) return null;
  if (!c.docIds.every((id) => idAppears(id, toolOutput))) return false;
  return c.value === null || normalise(toolOutput).includes(normalise(c.value));
}

function lastAssistant(seq: Sequence): string | null {
  const m = seq.messages.filter((x) => x.role === 'assistant').at(-1);
  return m ? m.content : null;
}

/** The reporting sequences of a rollout: answered workers (planner–worker) or the answered single agent. */
export function reportingSequences(r: Rollout): Sequence[] {
  const candidates = r.mode === 'single' ? [r.root] : r.workers;
  return candidates.filter((s) => s.outcome === 'answered' && lastAssistant(s) !== null);
}

export function groundingStats(rollouts: readonly Rollout[]): GroundingStats {
  let reports = 0;
  let claiming = 0;
  let grounded = 0;
  for (const r of rollouts) {
    for (const seq of reportingSequences(r)) {
      reports++;
      const g = isGrounded(lastAssistant(seq)!, toolOutputText(seq));
      if (g === null) continue;
      claiming++;
      if (g) grounded++;
    }
  }
  return { reports, claiming, grounded, rate: claiming > 0 ? grounded / claiming : NaN };
}
