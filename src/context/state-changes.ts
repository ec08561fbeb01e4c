/**
 * What changed between two states of a story, one line per change (`changesSince`), as the chapter journal and the
 * dynamic part of a prompt tell it; under a point of view, only what it could see. Internal: not exported from the
 * package.
 *
 * @module
 */
import { oneLineJson, singleLine } from '../core/single-line.js';
import { ellipsize } from '../core/text.js';
import { characterOf, type StoryState } from '../state/schema.js';
import { threadKnownTo, tieKnownTo, worldKeyName } from './prompt-layout.js';

/** One line of what a scene changed (`changesSince`): its fullest wording first. */
export interface ChangeLine {
  id: string;
  variants: string[];
  /** Set on the line of a character the scene left dead who was alive before it. */
  died?: { id: string; name: string };
}

/**
 * What changed between `start` and `now`, one line per change. Under a point of view, changes to characters only
 * where the point of view could see them: the characters `present` in the scene (and itself).
 */
export function changesSince(
  start: StoryState,
  now: StoryState,
  pov: string | undefined,
  present?: ReadonlySet<string>,
): ChangeLine[] {
  if (start.version === now.version) return [];
  const lines: ChangeLine[] = [];
  for (const character of Object.values(now.characters)) {
    if (pov !== undefined && present && character.id !== pov && !present.has(character.id)) continue;
    const before = characterOf(start, character.id);
    if (!before) {
      const facts = [character.description, character.appearance].filter(Boolean).join(' ');
      lines.push({
        id: `new-character:${character.id}`,
        variants: [
          `- New: ${singleLine(character.name)} (id: ${character.id}), ${character.role}, ${character.status}. ${facts}`,
          `- New: ${singleLine(character.name)} (id: ${character.id}), ${character.role}, ${character.status}`,
        ],
        // Met and dead within the changes told: as binding as any other death.
        ...(character.status === 'dead' ? { died: { id: character.id, name: character.name } } : {}),
      });
      continue;
    }
    const changes: string[] = [];
    if (before.status !== character.status) changes.push(`now ${character.status}`);
    for (const [trait, value] of Object.entries(character.traits)) {
      if (before.traits[trait] !== value) changes.push(`${singleLine(trait)} ${value.toFixed(2)}`);
    }
    for (const [target, relation] of Object.entries(character.relationships)) {
      // As in the character sheets: a point of view sees another's tie to itself alone.
      if (!tieKnownTo(character.id, target, pov)) continue;
      const old = before.relationships[target];
      if (!old || old.kind !== relation.kind || old.affinity !== relation.affinity) {
        const name = singleLine(characterOf(now, target)?.name ?? target);
        changes.push(`${singleLine(relation.kind)} of ${name} (affinity ${relation.affinity.toFixed(2)})`);
      }
    }
    if (before.arcProgress !== character.arcProgress) changes.push(`arc ${character.arcProgress.toFixed(2)}`);
    if (pov === undefined || pov === character.id) {
      const learned = character.knowledge.filter((fact) => !before.knowledge.includes(fact));
      if (learned.length > 0) changes.push(`learned: ${learned.map(singleLine).join(' | ')}`);
    }
    if (changes.length > 0) {
      lines.push({
        id: `changed-character:${character.id}`,
        variants: [
          `- ${singleLine(character.name)}: ${changes.join('; ')}`,
          `- ${singleLine(character.name)}: ${changes.slice(0, 2).join('; ')}`,
        ],
        ...(character.status === 'dead' && before.status !== 'dead'
          ? { died: { id: character.id, name: character.name } }
          : {}),
      });
    }
  }
  for (const thread of now.plotThreads) {
    const before = start.plotThreads.find((candidate) => candidate.id === thread.id);
    if (!before || before.status !== thread.status || before.summary !== thread.summary) {
      const what = before ? `${before.status} → ${thread.status}` : `opened (${thread.status})`;
      const summary = threadKnownTo(thread, pov) && thread.summary ? ` ${thread.summary}` : '';
      lines.push({
        id: `thread-change:${thread.id}`,
        variants: [
          `- Thread "${singleLine(thread.title)}" (${thread.id}): ${what}.${summary}`,
          `- Thread "${singleLine(thread.title)}": ${what}`,
        ],
      });
    }
  }
  const keys = new Set([...Object.keys(start.worldState), ...Object.keys(now.worldState)]);
  for (const key of [...keys].sort()) {
    const before = oneLineJson(start.worldState[key]);
    const after = oneLineJson(now.worldState[key]);
    if (before !== after) {
      lines.push({
        id: `world:${key}`,
        variants: [
          `- World: ${worldKeyName(key)} = ${after === undefined ? '(unset)' : ellipsize(after, 560)}`,
          `- World: ${worldKeyName(key)} changed`,
        ],
      });
    }
  }
  return lines;
}
