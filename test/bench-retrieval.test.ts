import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

  it('reads turn ids and evidence through one spelling, so a file writing D1:01 or d1:1 throughout still matches', async () => {
    for (const [first, second] of [
      ['D1:01', 'D1:02'],
      ['d1:1', 'd1:2'],
    ] as const) {
      const file = writeJson(`ids-${first.replace(':', '-')}.json`, [
        {
          sample_id: 'ids',
          conversation: {
            session_1: [
              { speaker: 'Ana', dia_id: first, text: 'I adopted a grey kitten called Pebble.' },
              { speaker: 'Ben', dia_id: second, text: 'I ran the Boston marathon.' },
            ],
          },
          qa: [{ question: 'What is the kitten called?', evidence: [first], category: 1 }],
        },
      ]);
      const { turns, sessions } = loadLocomo(readLocomo(file));
      expect(
        turns.corpora[0]!.units.map((unit) => unit.id),
        first,
      ).toEqual(['D1:1', 'D1:2']);
      expect(turns.questions[0]!.gold, first).toEqual(['D1:1']);
      expect(sessions.questions[0]!.gold, first).toEqual(['S1']);
      const embedder = createHashingEmbedder({ dimensions: 64 });
      // Dense returns both turns at k = 2: the gold turn is found.
      const [row] = await runRetrievalBenchmark(turns, { ks: [2], methods: ['dense'], embedder });
      expect(row!.recall, first).toBe(1);
    }
  });

  it('finds every turn id in an evidence string however it is separated, and keeps ghosts as misses', () => {
    expect(cleanEvidence('D1:3 D1:4')).toEqual(['D1:3', 'D1:4']);
    expect(cleanEvidence('D1:3 and D1:04')).toEqual(['D1:3', 'D1:4']);
    expect(cleanEvidence(['d2:7', ' D:3:1 '])).toEqual(['D2:7', 'D3:1']);
    expect(cleanEvidence('see above')).toEqual(['see above']);
    const file = writeJson('spaced-evidence.json', [
      { ...conversation, qa: [{ question: 'Kitten and vase?', evidence: 'D1:1 D2:1 D7:7', category: 1 }] },
    ]);
    const { turns, sessions } = loadLocomo(readLocomo(file));
    expect(turns.questions[0]!.gold).toEqual(['D1:1', 'D2:1', 'D7:7']);
    // D7:7 names no turn: it stays in the gold list and can only miss.
    expect(sessions.questions[0]!.gold).toEqual(['S1', 'S2', 'missing:D7:7']);
  });

  it('reads a file that starts with a byte-order mark', () => {
    const file = join(folder, 'bom.json');
    writeFileSync(file, `\uFEFF${JSON.stringify([conversation])}`);
    expect(loadLocomo(readLocomo(file)).turns.questions).toHaveLength(4);
  });

  it('reads a numeric sample_id as the corpus id', () => {
    const { turns } = loadLocomo([{ ...conversation, sample_id: 26 }]);
    expect(turns.corpora.map((corpus) => corpus.id)).toEqual(['26']);
    expect(turns.questions.every((question) => question.corpusId === '26')).toBe(true);
  });

  it('gives each turn only the neighbours the index text reads, however long its session', async () => {
    const count = 3_000;
    const said = (i: number) => `turn ${i} is about item ${i * 7} in the little shop on the corner`;
    const turnsOf = Array.from({ length: count }, (_, i) => ({
      speaker: i % 2 ? 'Ana' : 'Ben',
      dia_id: `D1:${i + 1}`,
      text: said(i),
    }));
    const long = {
      sample_id: 'long',
      conversation: { session_1_date_time: 'noon', session_1: turnsOf },
      qa: [{ question: 'Which turn is about item 7?', evidence: ['D1:2'], category: 1 }],
    };
    const { turns } = loadLocomo([long]);
    const units = turns.corpora[0]!.units;
    const carried = units.reduce((sum, unit) => sum + (unit.before?.length ?? 0) + (unit.after?.length ?? 0), 0);
    expect(carried).toBeLessThanOrEqual(count * 2 * 2);
    // The nearest neighbours, nearest last before and nearest first after, as composeIndexText reads them.
    const line = (i: number) => `${i % 2 ? 'Ana' : 'Ben'}: ${said(i)}`;
    expect(units[1_000]!.before).toEqual([line(998), line(999)]);
    expect(units[1_000]!.after).toEqual([line(1_001), line(1_002)]);
    expect(units[0]!.before).toEqual([]);
    expect(units[count - 1]!.after).toEqual([]);
    // Indexing with more neighbours than the units carry is refused, not quietly measured on fewer.
    const wider = { ks: [1], methods: ['bm25' as const], compose: { maxNeighbours: 3 } };
    await expect(runRetrievalBenchmark(turns, wider)).rejects.toThrow(/maxNeighbours 3 .* loaded with \(2\)/);
    const file = writeJson('long.json', [long]);
    const [loaded] = loadDatasets(file, 'locomo', undefined, { maxNeighbours: 3 });
    expect(loaded!.corpora[0]!.units[1_000]!.before).toEqual([line(997), line(998), line(999)]);
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

  it('tells on stderr of a questions file with no story file, and scores the rest', () => {
    const partial = join(folder, 'fairytale-partial');
    mkdirSync(join(partial, 'questions', 'train'), { recursive: true });
    mkdirSync(join(partial, 'section-stories', 'train'), { recursive: true });
    cpSync(join(stories, 'tiny-story.csv'), join(partial, 'section-stories', 'train', 'tiny-story.csv'));
    cpSync(join(questions, 'tiny-questions.csv'), join(partial, 'questions', 'train', 'tiny-questions.csv'));
    cpSync(join(questions, 'tiny-questions.csv'), join(partial, 'questions', 'train', 'orphan-questions.csv'));
    const run = benchRetrieval('--file', partial, '--format', 'fairytaleqa', '--json', '--methods', 'bm25');
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.results[0].questions).toBe(2);
    expect(run.stderr).toContain('1 FairytaleQA questions file(s) have no story file');
    expect(run.stderr).toContain('orphan-questions.csv');
  });

  it('reads a cor_section written as a float ("3.0") as that section', () => {
    expect(parseSections('3.0, 4.00')).toEqual(['S3', 'S4']);
    expect(parseSections('3.5')).toEqual(['missing:3.5']);
  });

  describe('the published layout', () => {
    const questionsCsv =
      'question_id,local-or-sum,cor_section,attribute1,attribute2,question,ex-or-im1,answer1\n' +
      '1,local,2,setting,,Where did the owl hoot at midnight?,explicit,the old oak tree\n' +
      '2,local,1.0,action,,What did the miller grind?,explicit,corn\n';
    const sectionCsv =
      'section,text\n1,"The miller ground corn all day, and his wife baked bread."\n' +
      '2,"An owl hooted from the old oak tree at midnight."\n';
    // The same story split into sentences: same file name, no section column.
    const sentenceCsv =
      'document_id,text\nowl,"The miller ground corn all day, and his wife baked bread."\n' +
      'owl,An owl hooted from the old oak tree at midnight.\n';
    const write = (path: string, text: string) => {
      mkdirSync(join(path, '..'), { recursive: true });
      writeFileSync(path, text);
      return path;
    };
    /** One story in every folder of `root` the published layout has, under `group` (a split or an origin). */
    const publish = (root: string, group: string) => {
      write(join(root, 'questions', group, 'owl-questions.csv'), questionsCsv);
      write(join(root, 'section-stories', group, 'owl-story.csv'), sectionCsv);
      write(join(root, 'sentence-stories', group, 'owl-story.csv'), sentenceCsv);
    };
    const sections = (path: string) => loadFairytaleQa(path).corpora.map((corpus) => corpus.units.map((u) => u.id));

    it('reads section-stories/, never sentence-stories/, in data-by-train-split/ (a test split too) and data-by-origin/', () => {
      const repository = join(folder, 'FairytaleQAData');
      const split = join(repository, 'data-by-train-split');
      publish(split, 'test');
      write(join(split, 'section-stories', 'all', 'owl-story.csv'), sectionCsv);
      const origin = join(repository, 'data-by-origin');
      publish(origin, 'first-round');
      for (const path of [
        split,
        join(split, 'questions', 'test'),
        join(split, 'questions', 'test', 'owl-questions.csv'),
        join(split, 'sentence-stories', 'test', 'owl-story.csv'),
        origin,
        repository,
      ]) {
        expect(sections(path), path).toEqual([['S1', 'S2']]);
      }
      const dataset = loadFairytaleQa(origin);
      // "1.0" is section 1, as the story file's own "1.0" would be.
      expect(dataset.questions.map((q) => q.gold)).toEqual([['S2'], ['S1']]);
      // Also with the folders the other way round: <origin>/questions/, <origin>/section-stories/, ...
      const nested = join(folder, 'by-origin-nested', 'first-round');
      write(join(nested, 'questions', 'owl-questions.csv'), questionsCsv);
      write(join(nested, 'section-stories', 'owl-story.csv'), sectionCsv);
      write(join(nested, 'sentence-stories', 'owl-story.csv'), sentenceCsv);
      expect(sections(join(folder, 'by-origin-nested'))).toEqual([['S1', 'S2']]);
      expect(sections(join(nested, 'questions', 'owl-questions.csv'))).toEqual([['S1', 'S2']]);
    });

    it('scores the published layout end to end', () => {
      const root = join(folder, 'published', 'data-by-train-split');
      publish(root, 'test');
      const run = benchRetrieval(
        ...['--file', root, '--format', 'fairytaleqa', '--json'],
        ...['--k', '1', '--methods', 'bm25'],
      );
      expect(run.status, run.stderr).toBe(0);
      const report = JSON.parse(run.stdout) as { results: Array<{ recall: number; questions: number }> };
      expect(report.results).toMatchObject([{ recall: 1, questions: 2 }]);
    });

    it('refuses questions whose story has no sections, naming the files, rather than scoring them as misses', () => {
      const sentencesOnly = join(folder, 'sentences-only');
      write(join(sentencesOnly, 'questions', 'test', 'owl-questions.csv'), questionsCsv);
      const story = write(join(sentencesOnly, 'sentence-stories', 'test', 'owl-story.csv'), sentenceCsv);
      const questionsFile = join(sentencesOnly, 'questions', 'test', 'owl-questions.csv');
      expect(refusal('--file', sentencesOnly, '--format', 'fairytaleqa', '--json', '--k', '1')).toBe(
        `FairytaleQA story owl: ${story} has no "section" and "text" columns (sentence-level?), so the questions of ${questionsFile}, which name sections, could only miss`,
      );
      const unnumbered = join(folder, 'unnumbered');
      const empty = write(join(unnumbered, 'owl-story.csv'), 'section,text\n,The miller.\nfirst,The owl.\n');
      write(join(unnumbered, 'owl-questions.csv'), questionsCsv);
      expect(() => loadFairytaleQa(unnumbered)).toThrow(`${empty}: no numbered section in its "section" column`);
    });
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

describe('npm run bench:retrieval', () => {
  it('prints only the JSON object on stdout when run through npm, as the command is spelt', () => {
    // Without the npm settings of a surrounding `npm test`: the project's own .npmrc is what is tested.
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
    const run = spawnSync(
      'npm',
      ['run', 'bench:retrieval', '--', '--file', locomoFile, '--format', 'locomo', '--json', '--k', '1'],
      { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env },
    );
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as { dataset: string; results: Array<{ unit: string }> };
    expect(report.dataset).toBe('locomo');
    expect(report.results.map((row) => row.unit)).toContain('session');
  });
});
