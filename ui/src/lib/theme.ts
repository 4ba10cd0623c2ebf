// The theme: the owner's setting and the system's preference (theme.test.ts).

export type ThemeSetting = "light" | "dark" | "system";

export function resolveTheme(setting: ThemeSetting, prefersDark: boolean): "light" | "dark" {
  if (setting === "system") return prefersDark ? "dark" : "light";
  return setting;
}
