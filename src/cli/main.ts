/**
 * The `matpo` command. Subcommands are loaded lazily from ./commands/<name>.ts so that a quick
 * command does not pay for loading the engine.
 */
import { MatpoError } from '../core/errors.ts';
import type { Command } from './command.ts';

/** Every subcommand, in the order `matpo --help` lists them. */
export const COMMANDS: Record<string, string> = {
  demo: 'generate a world, warm-start a tiny model, train it with MATPO, evaluate before/after',
  world: 'generate an offline research world (entities, documents, questions)',
  index: 'build a BM25 search index over a corpus',
  'init-model': 'create a randomly initialised model directory (Hugging Face layout)',
  generate: 'generate a chat reply with a model directory',
  logprobs: 'per-token logprobs of token sequences under a model',
  run: 'run planner–worker (or single-agent) rollouts and score them',
  serve: 'serve a model directory over an OpenAI-compatible HTTP API',
  sft: 'supervised warm-start on chat transcripts',
  'merge-lora': 'merge a PEFT LoRA adapter into its base model (a full Hugging Face directory)',
  train: 'reinforcement learning with MATPO or single-agent GRPO',
  eval: 'evaluate a model on a world split or a dataset',
  experiment: 'MATPO vs single-agent GRPO comparison over seeds',
  view: 'open the run dashboard in the browser',
};

function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  const lines = Object.entries(COMMANDS).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
  return `usage: matpo <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nmatpo <command> --help for a command's options`;
}

export async function loadCommand(name: string): Promise<Command> {
  if (!(name in COMMANDS)) throw new MatpoError('usage', `unknown command "${name}"\n\n${help()}`);
  const mod = (await import(`./commands/${name}.ts`)) as { command: Command };
  return mod.command;
}

export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return;
  }
  if (name === '--version') {
    const pkg = await import('../../package.json', { with: { type: 'json' } });
    console.log(pkg.default.version);
    return;
  }
  try {
    const command = await loadCommand(name);
    if (rest.includes('--help') || rest.includes('-h')) {
      console.log(`usage: matpo ${command.usage}\n\n${command.summary}`);
      return;
    }
    const code = await command.run(rest);
    if (typeof code === 'number' && code !== 0) process.exitCode = code;
  } catch (err) {
    if (err instanceof MatpoError) {
      console.error(`matpo ${name}: ${err.message}`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}
