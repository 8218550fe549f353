/**
 * The tools of a research world: `search` and `open` over its corpus, with the world's search-noise
 * knob applied (seeded by the world's seed, so the same query always gets the same noisy hits), and
 * the tool specs each role is offered (planners: `delegate_subtask`; workers and single agents:
 * search and open) for chat templates and SFT transcripts.
 */
import { z } from 'zod';
import { SearchIndex } from '../tools/search/search-index.ts';
import { createSearchTools, type SearchToolOptions } from '../tools/search/tools.ts';
import { toToolSpec } from '../tools/execute.ts';
import { defineTool, type Tool } from '../tools/tool.ts';
import type { Role } from '../core/records.ts';
import type { ToolSpec } from '../core/chat.ts';
import type { World } from './world/world.ts';

export function worldSearchTools(
  world: World,
  options: SearchToolOptions & { index?: SearchIndex } = {},
): { index: SearchIndex; tools: Tool[] } {
  const index = options.index ?? SearchIndex.build(world.documents);
  const tools = createSearchTools(index, { noise: world.options.noise, noiseSeed: world.options.seed, ...options });
  return { index, tools };
}

/** Tool specs per role, matching what the rollout engine offers (delegate_subtask for planners). */
export function worldToolSpecs(tools: readonly Tool[]): Record<Role, ToolSpec[]> {
  const delegate = defineTool({
    name: 'delegate_subtask',
    description: 'Delegate a self-contained subtask to a worker, who searches and reads documents and reports back what it found.',
    inputSchema: z.object({
      subtask: z.string().min(1).describe('The subtask, stated so that it can be done without seeing the rest of the conversation.'),
    }),
    async execute() {
      return '';
    },
  });
  const specs = tools.map((t) => toToolSpec(t));
  return { planner: [toToolSpec(delegate)], worker: specs, single: specs };
}
