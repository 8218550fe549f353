/**
 * Running the scripted expert over a world's questions through the agents' rollout engine (so its
 * transcripts have exactly the formats a learning agent sees), scoring the answers, measuring the
 * longest sequences per role, and writing the SFT transcripts.
 */
import { ExpertPolicy, writeTranscripts } from './expert.ts';
import { worldSearchTools, worldToolSpecs } from './world-tools.ts';
import type { World, WorldQuestion } from './world/world.ts';
import { RolloutEngine, runRollouts, type RolloutOptions } from '../agents/rollout.ts';
import { exactMatch } from '../rl/scoring.ts';
import type { ChatTokenizer } from '../core/chat.ts';
import type { Rollout } from '../core/records.ts';

export interface ExpertRunOptions {
  world: World;
  tokenizer: ChatTokenizer;
  mode: 'matpo' | 'single';
  questions?: readonly WorldQuestion[];
  errorRate?: number;
  /**
   * Probability that the planner (or single agent) answers a question from memory (see
   * `ExpertOptions.guessRate`). In planner–worker mode the workers are still demonstrated on every
   * question's subtasks, from a run of the same expert without guesses.
   */
  guessRate?: number;
  /** Only questions of at most this many hops are answered from memory. Default: any. */
  guessMaxHops?: number;
  seed?: number;
  rollout: RolloutOptions;
  concurrency?: number;
  /** Write SFT transcripts here (one line per sequence). */
  transcripts?: string;
}

export interface ExpertRunResult {
  rollouts: Rollout[];
  /** Fraction of rollouts whose answer exactly matches a gold answer. */
  success: number;
  /** Fraction of the questions answered from memory, without a tool call. */
  guessed: number;
  /** Longest sequence in tokens: the root (planner or single agent) and the workers (0 in single mode). */
  longestRoot: number;
  longestWorker: number;
  transcriptLines: number;
}

export async function runExpert(options: ExpertRunOptions): Promise<ExpertRunResult> {
  const questions = options.questions ?? options.world.questions.filter((q) => q.split === 'train');
  const { tools } = worldSearchTools(options.world);
  const expertWith = (guessRate: number) =>
    new ExpertPolicy({
      world: options.world,
      tokenizer: options.tokenizer,
      errorRate: options.errorRate ?? 0,
      guessRate,
      guessMaxHops: options.guessMaxHops,
      seed: options.seed ?? 0,
    });
  const run = (expert: ExpertPolicy, qs: readonly WorldQuestion[]) =>
    runRollouts(new RolloutEngine(expert, options.tokenizer, tools, options.rollout), qs, {
      mode: options.mode,
      group: 1,
      concurrency: options.concurrency ?? 4,
    });
  const expert = expertWith(options.guessRate ?? 0);
  const rollouts = await run(expert, questions);
  const success = rollouts.reduce((a, r, i) => a + exactMatch(r.answer, questions[i].answers), 0) / Math.max(1, rollouts.length);
  const guessedQuestions = questions.filter((q) => expert.guessPlan(q) !== null);
  const guessed = guessedQuestions.length / Math.max(1, questions.length);
  // Planner–worker mode: the workers of guessed questions are demonstrated too, from the same expert
  // without guesses (a warm-start with a quarter fewer worker transcripts read far worse). Workers do
  // not depend on the guess, so only the guessed questions are run again.
  const separateWorkers = options.mode === 'matpo' && guessedQuestions.length > 0;
  let withWorkers = rollouts;
  if (separateWorkers) {
    const again = new Map((await run(expertWith(0), guessedQuestions)).map((r) => [r.questionId, r]));
    withWorkers = rollouts.map((r) => again.get(r.questionId) ?? r);
  }
  const longestRoot = Math.max(0, ...rollouts.map((r) => r.root.tokens.length));
  const longestWorker = Math.max(0, ...withWorkers.flatMap((r) => r.workers.map((w) => w.tokens.length)));
  let transcriptLines = 0;
  if (options.transcripts) {
    const specs = { tools: worldToolSpecs(tools) };
    if (!separateWorkers) transcriptLines = writeTranscripts(rollouts, options.transcripts, specs).lines;
    else {
      transcriptLines = writeTranscripts(rollouts, options.transcripts, { ...specs, sequences: 'root' }).lines;
      transcriptLines += writeTranscripts(withWorkers, options.transcripts, { ...specs, sequences: 'workers', append: true }).lines;
    }
  }
  return { rollouts, success, guessed, longestRoot, longestWorker, transcriptLines };
}
