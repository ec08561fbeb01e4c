import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_ANTHROPIC_MODEL, DEFAULT_BEDROCK_MODEL } from '../src/cli/project.js';
import { startAnthropicStandIn } from '../src/testing/anthropic-server.js';
import { storyloom, temporaryFolders } from './fixtures/cli.js';

const workspace = temporaryFolders('storyloom-cli-');

describe('the storyloom command', () => {
  it('inits a story, runs episodes, builds the site and reports status', async () => {
    const cwd = workspace();
    const init = await storyloom(cwd, ['init', '--data', 'proj', '--template', 'lighthouse-keepers']);
    expect(init.code).toBe(0);
    expect(init.stdout).toContain('Created "The Lighthouse Keepers"');
    const run = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '3']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/\[1\] .+ \(created\)/);
    expect(run.stdout).toMatch(/3 scenes/);
    expect(existsSync(path.join(cwd, 'proj', 'site', 'lighthouse-keepers', 'index.html'))).toBe(true);
    const status = await storyloom(cwd, ['status', '--data', 'proj', '--json']);
    const parsed = JSON.parse(status.stdout);
    expect(parsed).toMatchObject({ storyId: 'lighthouse-keepers', scenes: 3, version: 3, unfinishedSteps: [] });
  });

  it('a story run with --no-images owes no picture: status says it was skipped, and the next run writes a new scene', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '2', '--no-images'])).code).toBe(0);
    const status = await storyloom(cwd, ['status', '--data', 'proj', '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({
      scenes: 2,
      unfinishedSteps: [],
      skippedSteps: [{ step: 'image', reason: 'run with --no-images' }],
    });
    const text = await storyloom(cwd, ['status', '--data', 'proj']);
    expect(text.stdout).not.toContain('Unfinished');
    expect(text.stdout).toContain('Skipped steps of the last scene: image (run with --no-images)');

    // With pictures again: no going back to draw the last scene's (its episode is out without one), only a new scene.
    const run = await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '1']);
    expect(run.code).toBe(0);
    expect(run.stdout).not.toMatch(/\(resumed\)/);
    expect(run.stdout).toMatch(/\[3\] .+ \(created\)/);
    const images = readdirSync(path.join(cwd, 'proj', 'site', 'lighthouse-keepers', 'images'));
    expect(images).toEqual([expect.stringMatching(/^000002-scene-000003-.+\.png$/)]);
    const after = JSON.parse((await storyloom(cwd, ['status', '--data', 'proj', '--json'])).stdout);
    expect(after).toMatchObject({ scenes: 3, unfinishedSteps: [], skippedSteps: [] });
  });

  it('takes an audience vote into the next episode', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    const add = await storyloom(cwd, [
      'influence',
      'add',
      '--data',
      'proj',
      '--choice',
      'search the cellar',
      '--id',
      'vote-1',
    ]);
    expect(add.stdout).toContain('Queued vote vote-1');
    const again = await storyloom(cwd, [
      'influence',
      'add',
      '--data',
      'proj',
      '--choice',
      'search the cellar',
      '--id',
      'vote-1',
    ]);
    expect(again.stdout).toContain('Already queued');
    await storyloom(cwd, ['run', '--data', 'proj', '--no-images']);
    const exported = await storyloom(cwd, ['export', '--data', 'proj']);
    const influence = exported.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line))
      .find((record) => record.kind === 'influence');
    expect(influence.influence).toMatchObject({ id: 'vote-1', status: 'applied' });
  });

  it('prints the assembled context with its trace and token counts', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '2', '--no-images']);
    const context = await storyloom(cwd, ['context', '--data', 'proj', '--query', 'the lamp', '--budget', '3000']);
    expect(context.code).toBe(0);
    expect(context.stdout).toContain('stable prefix');
    expect(context.stdout).toMatch(/tokens: \d+ of 3000 \(stable \d+, dynamic \d+\)/);
    const json = await storyloom(cwd, ['context', '--data', 'proj', '--json']);
    expect(JSON.parse(json.stdout).tokens.budget).toBe(8000);
  });

  it('without --query, names the audience choice of the influences the next episode takes (the oldest 100)', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    // 100 early votes for the cellar, then 50 later and ten times heavier ones for the tower.
    const vote = (choice: string, id: string, weight: number) =>
      storyloom(cwd, [
        'influence',
        'add',
        '--data',
        'proj',
        '--choice',
        choice,
        '--id',
        id,
        '--author',
        id,
        '--weight',
        String(weight),
      ]);
    for (let i = 0; i < 100; i++)
      expect((await vote('search the cellar', `a-${String(i).padStart(3, '0')}`, 1)).code).toBe(0);
    for (let i = 0; i < 50; i++)
      expect((await vote('climb the tower', `b-${String(i).padStart(3, '0')}`, 10)).code).toBe(0);
    const shown = JSON.parse((await storyloom(cwd, ['context', '--data', 'proj', '--json'])).stdout) as {
      query: string;
    };
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '1', '--no-images'])).code).toBe(0);
    const status = JSON.parse((await storyloom(cwd, ['status', '--data', 'proj', '--json'])).stdout);
    // The episode took the 100 cellar votes; the tower votes wait for the next: the query shown was its query.
    expect(status.pendingInfluences).toBe(50);
    expect(shown.query).toContain('search the cellar');
    expect(shown.query).not.toContain('climb the tower');
  });

  it('without --query, shows the prompt of the next episode: its own query, with the memories it retrieves', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '9', '--no-images']);
    const json = await storyloom(cwd, ['context', '--data', 'proj', '--json']);
    expect(json.code).toBe(0);
    const bundle = JSON.parse(json.stdout);
    // The episode query names the main characters: a scene older than the recent ones is retrieved for it.
    expect(bundle.similarScenes.length).toBeGreaterThan(0);
    expect(bundle.prompt.dynamic).toMatch(/Characters: /);
  });

  it('shows, prunes and rebuilds the story’s memory', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '14', '--no-images']);
    const statsOf = async () => {
      const result = await storyloom(cwd, ['memory', 'stats', '--data', 'proj', '--json']);
      expect(result.code).toBe(0);
      return JSON.parse(result.stdout);
    };
    const before = await statsOf();
    expect(before).toMatchObject({ storyId: 'lighthouse-keepers', dimensions: 1536, countsExact: true });
    expect(before.byType.scene).toBeGreaterThanOrEqual(14);
    expect(before.byType.summary).toBeGreaterThanOrEqual(2); // closed chapters and the synopsis
    const text = await storyloom(cwd, ['memory', 'stats', '--data', 'proj']);
    expect(text.stdout).toContain(`${before.total} vectors of 1536 dimensions`);

    // Everything in a summarized chapter, however recent or important.
    const pruneAll = () =>
      storyloom(cwd, ['memory', 'prune', '--data', 'proj', '--min-age', '0', '--max-importance', '1']);
    const prune = await pruneAll();
    expect(prune.code).toBe(0);
    const deleted = Number(/Pruned (\d+) scene vectors/.exec(prune.stdout)?.[1]);
    expect(deleted).toBeGreaterThan(0);
    const pruned = await statsOf();
    expect(pruned.byType.scene).toBe(before.byType.scene - deleted);
    expect(pruned.keywordDocuments).toBe(before.keywordDocuments - deleted);
    expect(pruned.byType.summary).toBe(before.byType.summary); // what covers them stays
    const again = await pruneAll();
    expect(again.stdout).toContain('Nothing to prune');
    expect((await storyloom(cwd, ['context', '--data', 'proj', '--query', 'the lamp'])).code).toBe(0);

    const reindex = await storyloom(cwd, ['memory', 'reindex', '--data', 'proj']);
    expect(reindex.code).toBe(0);
    expect(reindex.stdout).toContain('Reindexed lighthouse-keepers: 14 scenes');
    expect(reindex.stdout).toContain(`(${deleted} pruned scene memories left out)`);
    // What prune dropped stays out; the two new records remember it: the prune's own, and the merged one that
    // processes of earlier versions read. A third says it finished, so a prune in another process passes it over.
    expect(pruned.byType.meta).toBe(before.byType.meta + 3);
    expect((await statsOf()).byType).toEqual(pruned.byType);

    const bad = await storyloom(cwd, ['memory', 'prune', '--data', 'proj', '--max-importance', '1.5']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('must be a number from 0 to 1');
    const missing = await storyloom(cwd, ['memory', 'stats', '--data', 'proj', '--story', 'nope']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('there is no story "nope"');
  });

  it('prunes as chapters close when the project file asks for it', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    const file = path.join(cwd, 'proj', 'storyloom.json');
    const project = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...project, autoPrune: { minAgeScenes: 0, maxImportance: 1 } }));
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--episodes', '14', '--no-images'])).code).toBe(0);
    const stats = JSON.parse((await storyloom(cwd, ['memory', 'stats', '--data', 'proj', '--json'])).stdout);
    expect(stats.byType.summary).toBeGreaterThanOrEqual(2); // closed chapters and the synopsis
    // The fingerprint, the known locations, and the prune's own record, the merged one and the one of finished prunes.
    expect(stats.byType.meta).toBe(5);
    expect(stats.byType.scene).toBeGreaterThan(0); // the open chapter
    expect(stats.byType.scene).toBeLessThan(14);

    writeFileSync(file, JSON.stringify({ ...project, autoPrune: { maxImportance: 3 } }));
    const refused = await storyloom(cwd, ['status', '--data', 'proj']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('not a storyloom project file');
  });

  it('gives the sites the public URL and the language the project file names', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    const file = path.join(cwd, 'proj', 'storyloom.json');
    const project = JSON.parse(readFileSync(file, 'utf8'));
    const site = { baseUrl: 'https://stories.example.org/sites', language: 'pt-BR' };
    writeFileSync(file, JSON.stringify({ ...project, site }));
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--no-images'])).code).toBe(0);
    const folder = path.join(cwd, 'proj', 'site', project.storyId);
    expect(readFileSync(path.join(folder, 'index.html'), 'utf8')).toContain('<html lang="pt-BR">');
    // Each story's site is its folder under the URL, so the feed's links resolve wherever it is read.
    expect(readFileSync(path.join(folder, 'feed.atom'), 'utf8')).toContain(
      `xml:base="https://stories.example.org/sites/${project.storyId}/"`,
    );
    for (const bad of [
      { language: 'Portuguese!' },
      { baseUrl: 'stories.example.org' },
      { baseurl: 'https://x.org/' },
    ]) {
      writeFileSync(file, JSON.stringify({ ...project, site: bad }));
      const refused = await storyloom(cwd, ['status', '--data', 'proj']);
      expect(refused.code, JSON.stringify(bad)).toBe(1);
      expect(refused.stderr, JSON.stringify(bad)).toContain('not a storyloom project file');
    }
  });

  it('gives the sites the title the project file names, and refuses one that is empty, too long or not one line', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    const file = path.join(cwd, 'proj', 'storyloom.json');
    const project = JSON.parse(readFileSync(file, 'utf8'));
    const title = 'Tales & Lights of the <North>';
    writeFileSync(file, JSON.stringify({ ...project, site: { title } }));
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--no-images'])).code).toBe(0);
    const folder = path.join(cwd, 'proj', 'site', project.storyId);
    const escaped = 'Tales &amp; Lights of the &lt;North&gt;';
    expect(readFileSync(path.join(folder, 'index.html'), 'utf8')).toContain(
      `<a class="brand" href="index.html" dir="auto">${escaped}</a>`,
    );
    expect(readFileSync(path.join(folder, 'feed.atom'), 'utf8')).toContain(`<title type="text">${escaped}</title>`);
    for (const [bad, problem] of [
      ['', 'site.title: must not be empty'],
      ['   ', 'site.title: must not be empty'],
      ['Tales\nof the North', 'site.title: must be one line'],
      ['Tales\u2028of the North', 'site.title: must be one line'],
      ['T'.repeat(201), 'site.title: must be at most 200 characters'],
      [42, 'site.title'],
    ] as const) {
      writeFileSync(file, JSON.stringify({ ...project, site: { title: bad } }));
      const refused = await storyloom(cwd, ['status', '--data', 'proj']);
      expect(refused.code, JSON.stringify(bad)).toBe(1);
      expect(refused.stderr, JSON.stringify(bad)).toContain('not a storyloom project file');
      expect(refused.stderr, JSON.stringify(bad)).toContain(problem);
    }
    // At the bound, it is taken.
    writeFileSync(file, JSON.stringify({ ...project, site: { title: 'T'.repeat(200) } }));
    expect((await storyloom(cwd, ['status', '--data', 'proj'])).code).toBe(0);
  });

  it('exports, imports into a new project, and forks', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'a']);
    await storyloom(cwd, ['run', '--data', 'a', '--episodes', '3', '--no-images']);
    expect((await storyloom(cwd, ['export', '--data', 'a', '--out', 'story.jsonl'])).code).toBe(0);
    const imported = await storyloom(cwd, ['import', 'story.jsonl', '--data', 'b']);
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain('3 scenes');
    const status = JSON.parse((await storyloom(cwd, ['status', '--data', 'b', '--json'])).stdout);
    expect(status.scenes).toBe(3);
    const fork = await storyloom(cwd, ['fork', '--data', 'a', '--at', '2', '--as', 'branch']);
    expect(fork.code).toBe(0);
    const branch = JSON.parse((await storyloom(cwd, ['status', '--data', 'a', '--story', 'branch', '--json'])).stdout);
    expect(branch.scenes).toBe(2);
    const continued = await storyloom(cwd, ['run', '--data', 'a', '--story', 'branch', '--no-images']);
    expect(continued.code).toBe(0);
    const original = JSON.parse((await storyloom(cwd, ['status', '--data', 'a', '--json'])).stdout);
    expect(original.scenes).toBe(3);
    // The branch has its own site, holding the shared history and its own new scene.
    const branchSite = JSON.parse(readFileSync(path.join(cwd, 'a', 'site', 'branch', 'episodes.json'), 'utf8'));
    expect(JSON.stringify(branchSite)).toContain('"index":2');
    expect(existsSync(path.join(cwd, 'b', 'site', 'lighthouse-keepers', 'index.html'))).toBe(true);
  });

  it('creates a story from a bible file', async () => {
    const cwd = workspace();
    writeFileSync(
      path.join(cwd, 'moon.json'),
      JSON.stringify({
        bible: { title: 'Moon Market', premise: 'A night market on the moon.', genre: 'fantasy', tone: 'gentle' },
        characters: { ada: { id: 'ada', name: 'Ada', role: 'main' } },
      }),
    );
    const init = await storyloom(cwd, ['init', '--data', 'proj', '--bible', 'moon.json']);
    expect(init.code).toBe(0);
    expect(JSON.parse(readFileSync(path.join(cwd, 'proj', 'storyloom.json'), 'utf8')).storyId).toBe('moon');
    expect((await storyloom(cwd, ['run', '--data', 'proj', '--no-images'])).code).toBe(0);
  });

  it.each([
    [['run', '--data', 'missing'], 1, /no storyloom project in .*run "npm run storyloom -- init"/],
    [['run', '--data', 'proj', '--episodes', 'abc'], 2, /--episodes must be a whole number/],
    [['context', '--data', 'proj', '--budget', '100'], 2, /--budget must be a whole number from 256 to 2000000/],
    [['run', '--data', 'proj', '--generator', 'anthropic'], 1, /set ANTHROPIC_API_KEY/],
    [['run', '--data', 'proj', '--generator', 'bedrock'], 1, /set AWS_REGION/],
    [['run', '--data', 'proj', '--generator', 'gpt'], 2, /Allowed choices are procedural, anthropic, bedrock/],
    [['init', '--data', 'proj'], 1, /already holds a storyloom project/],
    [['init', '--data', 'other', '--bible', 'nope.json'], 1, /nope\.json does not exist/],
    [['import', 'nope.jsonl', '--data', 'proj'], 1, /nope\.jsonl does not exist/],
    [['fork', '--data', 'proj', '--at', '9', '--as', 'b'], 1, /has \d+ scenes: --at must be 1 to \d+/],
    [['fork', '--data', 'proj', '--at', '1', '--as', '../evil'], 2, /must be 1-128 letters/],
    [['status', '--data', 'proj', '--story', 'ghost'], 1, /there is no story "ghost"/],
    [['influence', 'add', '--data', 'proj'], 1, /a vote needs --choice/],
    [['bogus'], 2, /unknown command 'bogus'/],
  ])('fails clearly on %j', async (args, exitCode, message) => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    const result = await storyloom(cwd, args);
    expect(result.code).toBe(exitCode);
    expect(result.stderr).toMatch(message);
    // One line, no stack trace.
    expect(
      result.stderr
        .trim()
        .split('\n')
        .filter((line) => !line.startsWith('(Did you mean')),
    ).toHaveLength(1);
  });

  it('refuses a corrupt project file with a one-line error', async () => {
    const cwd = workspace();
    await storyloom(cwd, ['init', '--data', 'proj']);
    writeFileSync(path.join(cwd, 'proj', 'storyloom.json'), '{ not json');
    const result = await storyloom(cwd, ['status', '--data', 'proj']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/storyloom\.json is not valid JSON/);
  });
});

describe('the storyloom command with --generator anthropic', () => {
  it('asks for a current model by default: one the installed Anthropic SDK does not list as deprecated', async () => {
    // The SDK's own table of deprecated models and their end-of-life dates: a retired model answers 404.
    const sdk = path.dirname(createRequire(import.meta.url).resolve('@anthropic-ai/sdk'));
    const table = readFileSync(path.join(sdk, 'internal/data/deprecated-models.js'), 'utf8');
    const deprecated = [...table.matchAll(/'([\w.-]+)': '[^']*\d{4}'/g)].map((match) => match[1]);
    expect(deprecated.length).toBeGreaterThan(0);
    expect(deprecated).not.toContain(DEFAULT_ANTHROPIC_MODEL);
    // The Bedrock default is the same model through an inference profile.
    expect(DEFAULT_BEDROCK_MODEL).toBe(`global.anthropic.${DEFAULT_ANTHROPIC_MODEL}`);

    const standIn = await startAnthropicStandIn();
    try {
      const cwd = workspace();
      expect((await storyloom(cwd, ['init', '--data', 'proj'])).code).toBe(0);
      const env = { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: standIn.url };
      const run = await storyloom(cwd, ['run', '--data', 'proj', '-g', 'anthropic', '-n', '1', '--no-images'], env);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      const models = standIn.requests.filter((request) => request.path === '/v1/messages').map((r) => r.body.model);
      expect(models.length).toBeGreaterThan(0);
      expect(new Set(models)).toEqual(new Set([DEFAULT_ANTHROPIC_MODEL]));
    } finally {
      await standIn.close();
    }
  }, 60_000);
});
