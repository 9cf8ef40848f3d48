/** Whether a `database:` setting names a PostgreSQL server (postgres:// or postgresql://) rather than a file. */
export function isPostgresUrl(database: string): boolean {
  return /^postgres(ql)?:\/\//i.test(database);
}
