import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Document } from '@langchain/core/documents';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { afterAll, describe, expect, it } from 'vitest';
import { loadFairytaleQa, parseCsv, parseSections } from '../bench/datasets/fairytaleqa.js';
import { cleanEvidence, loadLocomo, readLocomo } from '../bench/datasets/locomo.js';
import { embedderFromSpec, withEmbeddingCache } from '../bench/embedders.js';
import { LANGCHAIN_METHODS } from '../bench/peers/langchain.js';
import { BM25Retriever } from '../bench/peers/langchain-bm25.js';
import { loadDatasets, recallOf, runRetrievalBenchmark } from '../bench/retrieval.js';
import { createHashingEmbedder } from '../src/context/hashing-embedder.js';
import { startBedrockStandIn } from '../src/testing/bedrock-server.js';

const folder = mkdtempSync(join(tmpdir(), 'bench-retrieval-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

const conversation = {
  sample_id: 'conv-x',
  conversation: {
    speaker_a: 'Ana',
    speaker_b: 'Ben',
    session_1_date_time: '1:00 pm on 1 May, 2023',
    session_1: [
      { speaker: 'Ana', dia_id: 'D1:1', text: 'I adopted a grey kitten called Pebble.' },
      {
        speaker: 'Ben',
        dia_id: 'D1:2',
        text: 'Lovely! I am training for a marathon.',
        blip_caption: 'a photo of shoes',
      },
    ],
    session_2_date_time: '2:00 pm on 9 May, 2023',
    session_2: [{ speaker: 'Ana', dia_id: 'D2:1', text: 'Pebble broke a vase yesterday.' }],
  },
  qa: [
    { question: 'What is the kitten called?', evidence: ['D1:1; D2:1'], category: 4 },
    { question: 'What is Ben training for?', evidence: ['D:1:2'], category: 1 },
    { question: 'What broke?', evidence: ['D2:01'], category: 2 },
    { question: 'Ghost evidence?', evidence: ['D9:9', 'D'], category: 3 },
    { question: 'No evidence at all', evidence: [], category: 5 },
  ],
};
const locomoFile = join(folder, 'locomo.json');
writeFileSync(locomoFile, JSON.stringify([conversation]));

const stories = join(folder, 'fairytale', 'section-stories', 'train');
const questions = join(folder, 'fairytale', 'questions', 'train');
mkdirSync(stories, { recursive: true });
mkdirSync(questions, { recursive: true });
writeFileSync(
  join(stories, 'tiny-story.csv'),
  'section,text\n1,"The miller had a daughter who spun straw, ""they said"",\ninto gold."\n2,A little man came at night.\n3,He guessed the name Rumpel.\n',
);
writeFileSync(
  join(questions, 'tiny-questions.csv'),
  'question_id,local-or-sum,cor_section,attribute1,attribute2,question\n1,local,1,character,,Who spun straw into gold?\n2,summary,"2, 3",action,,What did the little man do?\n',
);

describe('LoCoMo loader', () => {
  it('cleans dirty evidence strings', () => {
    expect(cleanEvidence('D8:6; D9:17')).toEqual(['D8:6', 'D9:17']);
    expect(cleanEvidence('D:11:26')).toEqual(['D11:26']);
    expect(cleanEvidence('D30:05')).toEqual(['D30:5']);
    expect(cleanEvidence('D')).toEqual(['D']);
    expect(cleanEvidence(['D1:2', 'D1:3; D2:1'])).toEqual(['D1:2', 'D1:3', 'D2:1']);
  });

  it('keeps evidence for missing turns as misses and skips questions without evidence', async () => {
    const { turns, sessions } = loadLocomo(readLocomo(locomoFile));
    expect(turns.corpora[0]!.units.map((unit) => unit.id)).toEqual(['D1:1', 'D1:2', 'D2:1']);
    expect(turns.corpora[0]!.units[1]!.text).toContain('a photo of shoes');
    expect(turns.skipped).toBe(1);
    expect(turns.questions.map((q) => q.gold)).toEqual([['D1:1', 'D2:1'], ['D1:2'], ['D2:1'], ['D9:9', 'D']]);
    expect(sessions.questions.map((q) => q.gold)).toEqual([
      ['S1', 'S2'],
      ['S1'],
      ['S2'],
      ['missing:D9:9', 'missing:D'],
    ]);
    const [turnResult] = await runRetrievalBenchmark(turns, {
      ks: [3],
      methods: ['dense'],
      embedder: createHashingEmbedder({ dimensions: 64 }),
    });
    // Dense returns all three units at k = 3: everything that exists is found; the ghost question scores 0, not dropped.
    expect(turnResult).toMatchObject({ method: 'dense', unit: 'turn', k: 3, questions: 4, recall: 0.75 });
    expect(turnResult!.byCategory['3']).toBe(0);
  });
  it('reads every LoCoMo file under a folder, passing over other JSON and keeping repeated sample ids apart', () => {
    const locomoFolder = join(folder, 'locomo-folder');
    mkdirSync(join(locomoFolder, 'more'), { recursive: true });
    writeFileSync(join(locomoFolder, 'a.json'), JSON.stringify([conversation]));
    writeFileSync(join(locomoFolder, 'more', 'b.json'), JSON.stringify(conversation));
    writeFileSync(join(locomoFolder, 'notes.json'), JSON.stringify({ note: 'not a conversation' }));
    writeFileSync(join(locomoFolder, 'readme.txt'), 'not json');
    expect(readLocomo(locomoFolder)).toHaveLength(2);
    const [turns, sessions] = loadDatasets(locomoFolder, 'locomo');
    expect(turns!.corpora.map((corpus) => corpus.id)).toEqual(['conv-x', 'conv-x-1']);
    expect(turns!.questions.filter((q) => q.corpusId === 'conv-x-1')).toHaveLength(4);
    expect(sessions!.corpora).toHaveLength(2);
    expect(readLocomo(locomoFolder, [1])).toHaveLength(1);
  });

  it('names the file when a LoCoMo path is not LoCoMo', () => {
    const broken = join(folder, 'broken.json');
    writeFileSync(broken, '[{"conversation": {}');
    expect(() => readLocomo(broken)).toThrow(/broken\.json is not valid JSON/);
    const other = join(folder, 'other.json');
    writeFileSync(other, JSON.stringify([conversation, { qa: [] }]));
    expect(() => readLocomo(other)).toThrow(/other\.json: entry 1 is not a LoCoMo conversation/);
    const empty = join(folder, 'empty-folder');
    mkdirSync(empty);
    expect(() => readLocomo(empty)).toThrow(/No LoCoMo conversations found/);
  });
});

describe('FairytaleQA loader', () => {
  it('parses quoted CSV fields and section lists', () => {
    expect(parseCsv('a,b\n1,"x, ""y""\nz"\n')).toEqual([
      ['a', 'b'],
      ['1', 'x, "y"\nz'],
    ]);
    expect(parseSections('5, 6')).toEqual(['S5', 'S6']);
    expect(parseSections('3')).toEqual(['S3']);
  });

  it('loads a folder, or one file with its partner found in the sibling folder', () => {
    const fromFolder = loadFairytaleQa(join(folder, 'fairytale'));
    expect(fromFolder.corpora).toHaveLength(1);
    expect(fromFolder.corpora[0]!.units.map((unit) => unit.id)).toEqual(['S1', 'S2', 'S3']);
    expect(fromFolder.corpora[0]!.units[0]!.text).toContain('spun straw, "they said",\ninto gold.');
    expect(fromFolder.questions.map((q) => [q.gold, q.category])).toEqual([
      [['S1'], 'character'],
      [['S2', 'S3'], 'action'],
    ]);
    const fromFile = loadFairytaleQa(join(questions, 'tiny-questions.csv'));
    expect(fromFile.questions).toHaveLength(2);
    expect(loadDatasets(join(stories, 'tiny-story.csv'), 'fairytaleqa')[0]!.corpora).toHaveLength(1);
  });
});

describe('bench:retrieval --peers', () => {
  it('adds LangChain rows measured on the same units and vectors', async () => {
    const { turns } = loadLocomo(readLocomo(locomoFile));
    const results = await runRetrievalBenchmark(turns, {
      ks: [1, 3],
      methods: ['dense', 'bm25'],
      embedder: createHashingEmbedder({ dimensions: 64 }),
      peers: true,
    });
    const row = (method: string, k: number) => results.find((r) => r.method === method && r.k === k);
    for (const method of LANGCHAIN_METHODS) expect(row(method, 1)).toMatchObject({ unit: 'turn', questions: 4 });
    // The same vectors give the same ranking: LangChain's vector store agrees with storyloom's dense search.
    expect(row('langchain-vector', 1)!.recall).toBe(row('dense', 1)!.recall);
    expect(row('langchain-vector', 3)!.recall).toBe(0.75); // all three units: only the ghost question misses
  });

  it('keeps LangChain BM25Retriever as it is: lower-cased query terms counted as case-sensitive substrings', async () => {
    const documents = ['Pebble broke a vase.', 'pebble? no, a stone.', 'A kitten called Pebble.'].map(
      (text, id) => new Document({ pageContent: text, metadata: { id } }),
    );
    const retriever = BM25Retriever.fromDocuments(documents, { k: 3 });
    const ids = async (query: string) => (await retriever.invoke(query)).map((document) => document.metadata.id);
    // "Pebble?" becomes "pebble?", found only where that exact, lower-case text stands.
    expect((await ids('Pebble?'))[0]).toBe(1);
    // "kitten" is a term of one document only.
    expect((await ids('kitten'))[0]).toBe(2);
  });
});

describe('recallOf', () => {
  it('is the share of gold ids retrieved', () => {
    expect(recallOf(['a', 'b'], ['b', 'c'])).toBe(0.5);
    expect(recallOf(['a'], [])).toBe(0);
  });
});

describe('bench:retrieval with a model-backed embedder', () => {
  it('names the embedders it knows and refuses others', () => {
    expect(embedderFromSpec('hashing', { dimensions: 64 }).dimensions).toBe(64);
    expect(embedderFromSpec('bedrock:amazon.titan-embed-text-v2:0', { dimensions: 256 }).modelId).toBe(
      'amazon.titan-embed-text-v2:0',
    );
    expect(() => embedderFromSpec('openai:text-embedding-3-small')).toThrow(/--embedder must be/);
    expect(() => embedderFromSpec('bedrock:no-such-model')).toThrow(/model must be one of/);
  });

  it('runs on a Bedrock model (the stand-in here), embedding each text once across runs with the cache file', async () => {
    const standIn = await startBedrockStandIn();
    try {
      const bedrock = {
        region: 'us-east-1',
        clientConfig: {
          endpoint: standIn.url,
          credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
          requestHandler: new NodeHttpHandler(),
        },
      };
      const cacheFile = join(folder, 'embeddings.sqlite');
      const { turns } = loadLocomo(readLocomo(locomoFile));
      const run = async () => {
        const embedder = withEmbeddingCache(
          embedderFromSpec('bedrock:amazon.titan-embed-text-v2:0', { dimensions: 256, bedrock }),
          cacheFile,
        );
        try {
          const results = await runRetrievalBenchmark(turns, { ks: [2], embedder });
          return { results, embedded: embedder.embedded };
        } finally {
          embedder.close();
        }
      };
      const first = await run();
      // 3 turns and 4 questions, each embedded once although every method of every question asks for its vector.
      expect(first.embedded).toBe(7);
      expect(standIn.requests).toHaveLength(7);
      expect(first.results.map((row) => row.method)).toEqual([
        'dense',
        'bm25',
        'fused',
        'fused+groups',
        'fused+scoring',
      ]);
      const second = await run();
      expect(second.embedded).toBe(0);
      expect(standIn.requests).toHaveLength(7);
      expect(second.results).toEqual(first.results);
    } finally {
      await standIn.close();
    }
  });
});
