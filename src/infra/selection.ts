import { Kind, type GraphQLResolveInfo, type SelectionSetNode } from 'graphql';

/**
 * Whether the field being resolved selects a field named `name` directly (through fragments too;
 * `@skip`/`@include` are not evaluated, so it may say yes to a skipped field). Lets a resolver
 * start the next level's load in its own tick, saving the operation a round trip.
 */
export function selectsField(info: GraphQLResolveInfo, name: string): boolean {
  const visit = (set: SelectionSetNode | undefined, seen: ReadonlySet<string>): boolean =>
    set !== undefined &&
    set.selections.some((s) => {
      if (s.kind === Kind.FIELD) return s.name.value === name;
      if (s.kind === Kind.INLINE_FRAGMENT) return visit(s.selectionSet, seen);
      const fragment = info.fragments[s.name.value];
      if (!fragment || seen.has(s.name.value)) return false;
      return visit(fragment.selectionSet, new Set([...seen, s.name.value]));
    });
  return info.fieldNodes.some((node) => visit(node.selectionSet, new Set()));
}
