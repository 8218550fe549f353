/**
 * matpo's public TypeScript API. Everything a user needs to run planner–worker agents, train them
 * with MATPO or a single-agent baseline, and bring their own tools, rewards, models and servers.
 * Layers (see docs/design.md): engine → model → policy → tools/agents → rl → train.
 */
// Errors and registries
export { MatpoError, ConfigError, FileFormatError, UnknownNameError, EndpointError, InvalidArgumentError } from './core/errors.ts';
export { Registry } from './core/registry.ts';

// Policies: the one door to compute (sampling and trainable contracts)
export type { ChatTokenizer, ChatMessage, ToolSpec } from './core/chat.ts';
export type {
  SamplingPolicy,
  TrainablePolicy,
  PolicyLoader,
  SampleParams,
  SampleHint,
  SampleResult,
  LossFn,
  LossOutput,
  ForwardOutput,
  ForwardBackwardResult,
  OptimParams,
  OptimResult,
} from './core/policy.ts';
export { isTrainable } from './core/policy.ts';
export { EmbeddedPolicy, type EmbeddedLoadOptions } from './policy/embedded.ts';
export { OpenAIPolicy, assertTokenExact, listModels, type OpenAIPolicyOptions } from './policy/openai.ts';
export { servePolicy, type ServeOptions } from './policy/server.ts';

// Model files
export { loadTokenizer } from './model/tokenizer.ts';
export { loadModelDir, saveModelDir } from './model/checkpoint.ts';
export { parseModelConfig, presetConfig, MODEL_PRESETS, type ModelConfig } from './model/config.ts';

// Tools
export { defineTool, type Tool, type ToolContext } from './tools/tool.ts';
export { executeTool, toToolSpec } from './tools/execute.ts';
export { createWebSearchTool } from './tools/web-search.ts';
export { createWebFetchTool } from './tools/web-fetch.ts';
export { McpClient, connectMcpServers, type McpServerConfig } from './tools/mcp.ts';
export { SearchIndex } from './tools/search/search-index.ts';
export { createSearchTools } from './tools/search/tools.ts';

// Agents: roles, rendering, rollouts
export type { Rollout, Sequence, TurnRecord, ToolCallRecord, RewardParts, SequenceOutcome, Datum, Role, Mode } from './core/records.ts';
export {
  RolloutEngine,
  runRollouts,
  writeRolloutsJsonl,
  readRolloutsJsonl,
  DELEGATE_TOOL,
  type AgentLimits,
  type RolloutOptions,
} from './agents/rollout.ts';
export { renderConversation } from './agents/renderer.ts';
export { loadPrompts } from './agents/prompts.ts';

// RL: rewards, advantages, credit assignment, losses, datums, scoring
export { rewardRegistry, scoreRollout, registeredScorer, type RewardWeights, type AnswerScorer } from './rl/rewards.ts';
export { estimatorRegistry, filterZeroVarianceGroups } from './rl/advantages.ts';
export { creditRegistry } from './rl/credit.ts';
export { policyLossRegistry, aggregationRegistry, makePolicyLoss, makeNllLoss, type PolicyLossConfig } from './rl/losses.ts';
export { buildDatums } from './rl/datums.ts';
export { normalizeAnswer, exactMatch, coverExactMatch, formatScore, scorers } from './rl/scoring.ts';
export { extractAnswer } from './agents/answer.ts';
export { createJudgeScorer } from './rl/judge.ts';

// Environments: the offline research world, QA datasets, the scripted expert
export { generateWorld, saveWorld, loadWorld, type World, type WorldOptions } from './envs/world/world.ts';
export { worldSearchTools } from './envs/world-tools.ts';
export { loadQaDataset, QA_PRESETS } from './envs/datasets.ts';
export { ExpertPolicy } from './envs/expert.ts';

// Training
export { parseConfig, loadConfig, rolloutOptions, rewardWeights, lossConfig, TrainConfigSchema, type TrainConfig } from './train/config.ts';
export { trainRl, type RlDeps } from './train/rl-loop.ts';
export { trainSft } from './train/sft.ts';
export { evaluate } from './train/evaluate.ts';
export type { Question, RolloutRequest, RolloutRunner } from './core/question.ts';
