import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
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

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const folder = mkdtempSync(join(tmpdir(), 'bench-retrieval-'));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

/** Runs `npm run bench:retrieval -- ...args` as a user would (through tsx, without npm's own output). */
function benchRetrieval(...args: string[]) {
  const tsx = join(ROOT, 'node_modules', '.bin', 'tsx');
  const run = spawnSync(tsx, ['bench/retrieval.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** The one-line message a refused `bench:retrieval` run prints on stderr, after checking it exited 1 with no output. */
function refusal(...args: string[]): string {
  const run = benchRetrieval(...args);
  expect(run.status, run.stderr).toBe(1);
  expect(run.stdout).toBe('');
  const lines = run.stderr.trim().split('\n');
  expect(lines, 'one line, no stack trace').toHaveLength(1);
  return lines[0]!;
}

function writeJson(name: string, value: unknown): string {
  const file = join(folder, name);
  writeFileSync(file, JSON.stringify(value));
  return file;
}

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

  it('reads evidence given as one string, and refuses a file with no usable question', () => {
    const file = writeJson('string-evidence.json', [
      {
        ...conversation,
        qa: [
          { question: 'What is the kitten called?', evidence: 'D1:1', category: 4 },
          { question: 'What broke?', evidence: 'D2:01; D1:1', category: 2 },
        ],
      },
    ]);
    const { turns, sessions } = loadLocomo(readLocomo(file));
    expect(turns.questions.map((q) => q.gold)).toEqual([['D1:1'], ['D2:1', 'D1:1']]);
    expect(sessions.questions.map((q) => q.gold)).toEqual([['S1'], ['S2', 'S1']]);
    expect(turns.skipped).toBe(0);
    const unusable = writeJson('no-usable-question.json', [
      { ...conversation, qa: [{ question: 'No evidence at all', evidence: [], category: 5 }] },
    ]);
    expect(() => loadLocomo(readLocomo(unusable))).toThrow(/No usable LoCoMo question .*evidence/);
  });

  it('counts the questions of a conversation without sessions as misses, not leaving them out', async () => {
    const keyOnly = {
      sample_id: 'key',
      conversation: {
        session_1_date_time: '1:00 pm on 1 May, 2023',
        session_1: [
          { speaker: 'Ana', dia_id: 'D1:1', text: 'The key is under the mat by the blue door.' },
          { speaker: 'Ben', dia_id: 'D1:2', text: 'Thanks, I will fetch it after the marathon.' },
        ],
      },
      qa: [{ question: 'Where is the key?', evidence: ['D1:1'], category: 1 }],
    };
    const file = writeJson('no-sessions.json', [
      {
        sample_id: 'empty',
        conversation: { speaker_a: 'Ana', speaker_b: 'Ben' },
        qa: [{ question: 'Where is the key?', evidence: ['D1:1'], category: 2 }],
      },
      keyOnly,
    ]);
    const { turns, sessions } = loadLocomo(readLocomo(file));
    const embedder = createHashingEmbedder({ dimensions: 64 });
    const [turnRow] = await runRetrievalBenchmark(turns, { ks: [1], methods: ['bm25'], embedder });
    // BM25 finds the key's turn in the conversation that has it; the other question can only miss.
    expect(turnRow).toMatchObject({ unit: 'turn', questions: 2, recall: 0.5, byCategory: { 1: 1, 2: 0 } });
    const sessionRows = await runRetrievalBenchmark(sessions, { ks: [1], methods: ['bm25', 'groups'], embedder });
    expect(sessionRows.map((row) => [row.method, row.questions, row.recall])).toEqual([
      ['bm25', 2, 0.5],
      ['groups', 2, 0.5],
    ]);
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

  it('refuses a CSV with an unterminated quote, naming the file and the line the quote opened on', () => {
    expect(() => parseCsv('a,b\r\n1,"x\r\n2,y\r\n', 'x.csv')).toThrow(
      'x.csv: unterminated quoted field starting at line 2',
    );
    const bad = join(folder, 'fairytale-bad');
    mkdirSync(join(bad, 'section-stories', 'train'), { recursive: true });
    mkdirSync(join(bad, 'questions', 'train'), { recursive: true });
    writeFileSync(join(bad, 'section-stories', 'train', 'tiny-story.csv'), 'section,text\n1,The miller.\n2,A man.\n');
    const questionsFile = join(bad, 'questions', 'train', 'tiny-questions.csv');
    // Row 2 opens a quote it never closes: read as it stands, row 3 would vanish into its question text.
    writeFileSync(
      questionsFile,
      'question_id,local-or-sum,cor_section,attribute1,attribute2,question\n' +
        '1,local,1,character,,"Who said ""spin, spin""?"\n' +
        '2,local,1,action,,"Why did he come?\n' +
        '3,local,2,action,,Who came?\n',
    );
    expect(refusal('--file', bad, '--format', 'fairytaleqa', '--json', '--k', '1')).toBe(
      `${questionsFile}: unterminated quoted field starting at line 3`,
    );
  });

  it('refuses a path with no story/questions pair', () => {
    const empty = join(folder, 'fairytale-empty');
    mkdirSync(empty);
    expect(refusal('--file', empty, '--format', 'fairytaleqa', '--json')).toBe(
      `No FairytaleQA story/questions pairs found in ${empty}`,
    );
    // A LoCoMo file read as FairytaleQA holds no pair either.
    expect(() => loadFairytaleQa(locomoFile)).toThrow(`No FairytaleQA story/questions pairs found in ${locomoFile}`);
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

describe('bench:retrieval options', () => {
  it('refuses --select positions past the last conversation, naming them and how many there are', () => {
    expect(refusal('--file', locomoFile, '--format', 'locomo', '--json', '--select', '0,9,12')).toBe(
      `--select 9,12 names no conversation: ${locomoFile} holds 1 conversation (positions 0-0)`,
    );
  });

  it('refuses a reversed --k range and an empty --k list, naming --k', () => {
    expect(refusal('--file', locomoFile, '--format', 'locomo', '--json', '--k', '10-5')).toMatch(
      /^--k: the range 10-5 runs backwards/,
    );
    expect(refusal('--file', locomoFile, '--format', 'locomo', '--json', '--k', '')).toMatch(/^--k takes numbers/);
  });

  it('refuses a --k or --select range reaching past its limit before spelling it out', () => {
    expect(refusal('--file', locomoFile, '--format', 'locomo', '--json', '--k', '1-999999999999')).toBe(
      '--k: the range 1-999999999999 reaches past 10000',
    );
    expect(refusal('--file', locomoFile, '--format', 'locomo', '--json', '--select', '0-99999999999')).toBe(
      '--select: the range 0-99999999999 reaches past 1000000',
    );
  });

  it('refuses --k 0 and --k 20000, naming --k', () => {
    for (const k of ['0', '20000']) {
      expect(refusal('--file', locomoFile, '--format', 'locomo', '--json', '--k', k)).toBe(
        `--k must be whole numbers from 1 to 10000, got ${k}`,
      );
    }
  });

  it('refuses an unknown --methods name, listing the valid ones; LangChain methods only with --peers', () => {
    const misspelt = refusal('--file', locomoFile, '--format', 'locomo', '--json', '--methods', 'dense,fused+scorng');
    expect(misspelt).toMatch(
      /^--methods: unknown "fused\+scorng"; valid: dense, bm25, fused, fused\+groups, fused\+scoring/,
    );
    expect(refusal('--file', locomoFile, '--format', 'locomo', '--json', '--methods', 'bm25,langchain-bm25')).toMatch(
      /^--methods: unknown "langchain-bm25".*with --peers also langchain-vector, langchain-bm25/,
    );
    const run = benchRetrieval(
      '--file',
      locomoFile,
      ...['--format', 'locomo', '--json', '--k', '1', '--methods', 'bm25,langchain-bm25', '--peers'],
    );
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as { results: Array<{ method: string; unit: string }> };
    expect(report.results.map((row) => `${row.unit} ${row.method}`)).toEqual([
      'turn bm25',
      'turn langchain-bm25',
      'session bm25',
      'session langchain-bm25',
    ]);
  });
});
