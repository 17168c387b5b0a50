// config-schema.js — reading the training config's JSON schema (GET /api/config-schema):
// the launch form builds its fields from it, and the run page compares a run's config
// with its defaults.

/** A schema property with its $ref followed and a nullable anyOf folded into one. */
export function resolveProperty(schema, property) {
  if (property?.$ref) return resolveProperty(schema, schema.$defs?.[property.$ref.split("/").pop()]);
  if (property?.anyOf) {
    const options = property.anyOf.filter((option) => option.type !== "null");
    const nullable = options.length < property.anyOf.length;
    if (options.length === 1) return { ...resolveProperty(schema, options[0]), ...strip(property), nullable };
  }
  return property ?? {};
}

/** Every config field's default, by dotted path (`faults.nan_step`), from the config's
 *  JSON schema (GET /api/config-schema). The run page marks what a run set apart from it. */
export function schemaDefaults(schema) {
  const values = {};
  const walk = (object, prefix) => {
    for (const [name, raw] of Object.entries(object.properties ?? {})) {
      const property = resolveProperty(schema, raw);
      const path = prefix ? `${prefix}.${name}` : name;
      // A nullable object (lr_finder, actions.early_stop) is one JSON field: off when empty.
      if (property.type === "object" && property.properties && !property.nullable) walk(property, path);
      else values[path] = raw.default ?? property.default ?? null;
    }
  };
  walk(schema, "");
  return values;
}

function strip(property) {
  const { anyOf, ...rest } = property; // eslint-disable-line no-unused-vars
  return rest;
}
