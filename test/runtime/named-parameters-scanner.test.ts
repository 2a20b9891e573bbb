import { rewriteNamedParameters } from '../../lambda/shared/db/named-parameters';

// Where the SQL scanner must not stop early or skip too far: each case has a parameter after
// (or inside) the construct, so a scanner that mistakes where a string, comment or dollar
// quote ends loses or invents a parameter.

const names = (sql: string) => rewriteNamedParameters(sql, (_name, position) => `$${position}`).names;

describe('the SQL scanner around strings, comments and dollar quotes', () => {
  test.each([
    ['a plain string after a parenthesis keeps its backslash literal', "SELECT ('C:\\', :x)", ['x']],
    ['an E string at the start of a list takes backslash escapes', "SELECT (E'it\\'s :no', :x)", ['x']],
    ['a lower-case e string takes them too', "SELECT (e'it\\'s :no', :x)", ['x']],
    ['a quoted identifier keeps its backslash literal', 'SELECT "a\\" , :x', ['x']],
    ['the empty string ends where it ends', "SELECT '', :x", ['x']],
    ['a doubled quote does not end an E string that escapes a quote later', "SELECT E'a''b\\' :no', :x", ['x']],
    ['a minus before a parameter is not a comment', 'SELECT 2-:x, -:y', ['x', 'y']],
    ['a slash or a star before a parameter is not a comment', 'SELECT 6/:a, 2*:b', ['a', 'b']],
    ['a slash inside a block comment does not open another one', 'SELECT /* a / b */ :x', ['x']],
    ['a star inside a block comment does not close it', 'SELECT /* a * :no */ :x', ['x']],
    ['a dollar quote with a tag starts after a space', 'SELECT $fn$ :no $fn$, :x', ['x']],
    ['a positional $1 is not a dollar quote, even with one later', 'SELECT $1, :x, $$ :no $$', ['x']],
    ['a colon at the very end is not a parameter', 'SELECT :x:', ['x']],
  ])('%s', (_what, sql, expected) => {
    expect(names(sql)).toEqual(expected);
  });
});
