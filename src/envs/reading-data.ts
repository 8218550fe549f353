/**
 * Reading exercises for a short pre-training phase before the warm-start: cloze questions whose
 * answer stands in a text the model is shown, so the one skill that transfers across worlds —
 * copying a value and a document id out of the context — is trained on short sequences.
 *
 * One exercise per distinct fact (subject, relation) on a world's question chains, as a two-message
 * chat transcript (the JSONL lines `matpo sft` reads):
 *
 *   user       <context>\n\nQuestion: what is <the relation of the subject>? Answer from the text above and cite the document.
 *   assistant  <The relation of the subject> is <value>. Document <id> (<title>) says: "<the sentence stating it>"
 *
 * The context is either the fact's document as `open` returns it, or the result list of a search for
 * the subject (as `search` returns it, distractors and near-duplicate names included) when the
 * matching hit's snippet states the fact; a seeded draw per fact picks the kind (`searchShare` of
 * them from search results when possible). The answer is written with exactly the words of the
 * context, so every token of it can be copied; the sentence format is the one worker reports use.
 */
import { Rng } from '../util/rng.ts';
import { formatHits, formatPage } from '../tools/search/search-index.ts';
import { extractFacts, splitSentences } from './world/vocab.ts';
import { nounPhrase } from './expert.ts';
import { worldSearchTools } from './world-tools.ts';
import type { World } from './world/world.ts';
import type { ChatMessage } from '../core/chat.ts';

export interface ReadingOptions {
  /** At most this many exercises from the world. Default: one per distinct fact. */
  limit?: number;
  /** Share of exercises shown as search results rather than an opened page (when the snippet states the fact). Default 0.5. */
  searchShare?: number;
  seed?: number;
}

export interface ReadingExercise {
  messages: ChatMessage[];
  kind: 'page' | 'search';
  /** The value and document id the answer must copy. */
  value: string;
  docId: string;
}

const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/** The sentence of `text` stating `relation` with this subject and value, if any. */
function factSentence(text: string, relation: string, subject: string, value: string): string | undefined {
  const stated = extractFacts(text, relation).some((f) => f.subject === subject && f.object === value);
  return stated ? splitSentences(text).find((x) => x.includes(subject) && x.includes(value)) : undefined;
}

export function readingExercises(world: World, options: ReadingOptions = {}): ReadingExercise[] {
  const { index } = worldSearchTools(world, { noise: 0 });
  const docs = new Map(world.documents.map((d) => [d.id, d]));
  const rng = new Rng(`reading:${options.seed ?? world.options.seed}`);
  const share = options.searchShare ?? 0.5;
  const seen = new Set<string>();
  const out: ReadingExercise[] = [];
  for (const q of world.questions) {
    for (const step of q.chain) {
      if (options.limit !== undefined && out.length >= options.limit) return out;
      const key = `${step.subjectId}/${step.relation}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const doc = docs.get(step.docId);
      if (!doc) continue;
      const sentence = factSentence(doc.text, step.relation, step.subject, step.object);
      if (sentence === undefined) continue;
      const np = nounPhrase(step.relation, step.subject);
      const wantSearch = rng.next() < share;
      let context = formatPage(index.open(doc.id));
      let kind: ReadingExercise['kind'] = 'page';
      if (wantSearch) {
        const hits = index.search(step.subject, 5);
        const hit = hits.find((h) => h.id === doc.id);
        if (hit && hit.snippet.includes(sentence)) {
          context = formatHits(step.subject, hits);
          kind = 'search';
        }
      }
      out.push({
        kind,
        value: step.object,
        docId: doc.id,
        messages: [
          { role: 'user', content: `${context}\n\nQuestion: what is ${np}? Answer from the text above and cite the document.` },
          { role: 'assistant', content: `${cap(np)} is ${step.object}. Document ${doc.id} (${doc.title}) says: "${sentence}"` },
        ],
      });
    }
  }
  return out;
}
