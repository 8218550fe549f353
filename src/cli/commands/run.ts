/** `matpo run`: rollouts of a model over questions, scored and written as JSONL (see eval.ts). */
export { runCommand as command } from './eval.ts';
