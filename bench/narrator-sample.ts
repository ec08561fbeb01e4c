/**
 * Prints consecutive scenes of the procedural narrator, applying each delta, so a reader can judge the prose.
 *
 * Usage: npx tsx bench/narrator-sample.ts [count=3] [skip=0] [template=lighthouse-keepers] [seed=1]
 */
import { createProceduralNarrator } from '../src/generation/procedural-narrator.js';
import { createStoryFromTemplate } from '../src/generation/story-templates.js';
import { applyDelta } from '../src/state/reducer.js';
import type { StoryState } from '../src/state/schema.js';

const [count = 3, skip = 0] = process.argv.slice(2, 4).map(Number);
const template = process.argv[4] ?? 'lighthouse-keepers';
const seed = Number(process.argv[5] ?? 1);
const clock = { now: () => Date.UTC(2026, 0, 1), sleep: async () => {} };

let state: StoryState = createStoryFromTemplate(template, 'sample', clock);
const narrator = createProceduralNarrator({ seed });
for (let index = 0; index < skip + count; index++) {
  const sceneId = `sample-s${index}`;
  const { scene, delta } = await narrator.generate({
    storyId: state.storyId,
    sceneId,
    sceneIndex: state.sceneCount,
    chapterId: state.chapterId,
    state,
    prompt: { stable: '', dynamic: '' },
    influences: [],
    seed: index,
  });
  const result = applyDelta(state, delta, {
    ...scene,
    id: sceneId,
    storyId: state.storyId,
    chapterId: state.chapterId,
    index: state.sceneCount,
    createdAt: new Date(clock.now() + index * 3_600_000).toISOString(),
    stateVersion: state.version + 1,
    influencesApplied: delta.influencesApplied,
  });
  if (!result.ok) throw new Error(JSON.stringify(result.issues, null, 2));
  if (index >= skip) {
    console.log(`### Scene ${index + 1} (${state.chapterId}): ${scene.title}`);
    console.log(`mood: ${scene.mood} · themes: ${scene.themes.join(', ')} · importance: ${scene.importance}`);
    console.log(`summary: ${scene.summary}\n`);
    console.log(scene.text);
    console.log(`\n(${scene.text.split(/\s+/).length} words)\n`);
  }
  state = result.state;
}
