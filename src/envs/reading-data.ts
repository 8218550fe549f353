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
import { RELATIONS, extractFacts, splitSentences } from './world/vocab.ts';
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

export interface ReadingSessionOptions {
  /** Share of sessions whose context is a search-result list rather than an opened page. Default 0.5. */
  searchShare?: number;
  /** Most questions per session. Default 6. */
  maxQuestions?: number;
  seed?: number;
}

/**
 * Dense reading exercises: one context (a page as `open` shows it, or the result list of a search for
 * the page's subject), then one question after another about every fact the context states
 * unambiguously, each answered in the worker-report sentence format — several copy events per
 * context instead of one. Every document of the world (distractors too) opens one session, so a
 * result list also asks about near-duplicate names, which only an exact reading tells apart.
 */
export function readingSessions(world: World, options: ReadingSessionOptions = {}): ReadingExercise[] {
  const { index } = worldSearchTools(world, { noise: 0 });
  const rng = new Rng(`reading-sessions:${options.seed ?? world.options.seed}`);
  const share = options.searchShare ?? 0.5;
  const maxQuestions = options.maxQuestions ?? 6;
  const relations = Object.keys(RELATIONS);
  const kindOf = new Map(world.entities.map((e) => [e.id, e.kind]));
  const docKind = new Map(world.documents.map((d) => [d.id, kindOf.get(d.entityId)]));
  const out: ReadingExercise[] = [];
  for (const doc of world.documents) {
    const search = rng.next() < share;
    const hits = search ? index.search(doc.title, 5) : [];
    const sources = search
      ? hits.map((h) => ({ id: h.id, title: h.title, text: h.snippet }))
      : [{ id: doc.id, title: doc.title, text: doc.text }];
    const context = search ? formatHits(doc.title, hits) : formatPage(index.open(doc.id));
    // (subject, relation) → stated values, with where each is stated.
    const stated = new Map<string, { subject: string; relation: string; value: string; id: string; title: string; sentence: string }[]>();
    for (const src of sources) {
      for (const relation of relations) {
        if (RELATIONS[relation].subject !== docKind.get(src.id)) continue;
        for (const f of extractFacts(src.text, relation)) {
          if (f.subject !== src.title) continue;
          const key = `${f.subject}\u0000${relation}`;
          const sentence = factSentence(src.text, relation, f.subject, f.object);
          if (sentence === undefined) continue;
          const list = stated.get(key) ?? [];
          list.push({ subject: f.subject, relation, value: f.object, id: src.id, title: src.title, sentence });
          stated.set(key, list);
        }
      }
    }
    const facts = [...stated.values()].filter((l) => new Set(l.map((x) => x.value)).size === 1).map((l) => l[0]);
    if (facts.length === 0) continue;
    rng.shuffle(facts);
    const messages: ChatMessage[] = [];
    for (const [i, f] of facts.slice(0, maxQuestions).entries()) {
      const np = nounPhrase(f.relation, f.subject);
      const ask = `Question: what is ${np}? Answer from the text above and cite the document.`;
      messages.push({ role: 'user', content: i === 0 ? `${context}\n\n${ask}` : ask });
      messages.push({ role: 'assistant', content: `${cap(np)} is ${f.value}. Document ${f.id} (${f.title}) says: "${f.sentence}"` });
    }
    out.push({ messages, kind: search ? 'search' : 'page', value: facts[0].value, docId: facts[0].id });
  }
  return out;
}

/**
 * Copy drills: a few sentences drawn at random from the world's documents, and the model asked to
 * write them out again. Every name in the copy can only come from the context, so the drill grows
 * the attention pattern that finds an earlier occurrence of the current token and copies what
 * followed it — the circuit reading needs — before any question is asked. Measured on the demo's
 * tiny model (docs/research-recipe.md): without these drills the reading sessions taught no copying
 * at all in the same number of steps.
 */
export function copyDrills(world: World, options: { sentences?: number; seed?: number } = {}): ChatMessage[][] {
  const k = options.sentences ?? 6;
  const rng = new Rng(`copy-drills:${options.seed ?? world.options.seed}`);
  const sentences = rng.shuffle(world.documents.flatMap((d) => splitSentences(d.text)));
  const out: ChatMessage[][] = [];
  for (let i = 0; i + k <= sentences.length; i += k) {
    const text = sentences.slice(i, i + k).join(' ');
    out.push([
      { role: 'user', content: `Copy this text exactly:\n${text}` },
      { role: 'assistant', content: text },
    ]);
  }
  return out;
}
