import { rewriteNamedParameters } from '../../../lambda/shared/db/named-parameters';

const positional = (sql: string) => rewriteNamedParameters(sql, (_name, position) => `$${position}`);

describe('rewriteNamedParameters', () => {
  test('numbers distinct names in order of first use and reuses positions', () => {
    expect(positional('SELECT :a, :b, :a, :c_1')).toEqual({ text: 'SELECT $1, $2, $1, $3', names: ['a', 'b', 'c_1'] });
  });

  test('leaves ::casts alone, including a cast right after a parameter', () => {
    expect(positional("SELECT :id::uuid, x::text, '1'::int")).toEqual({
      text: "SELECT $1::uuid, x::text, '1'::int",
      names: ['id'],
    });
  });

  test.each([
    ["'it''s :x'", "'it''s :x'"],
    ["E'\\' :x'", "E'\\' :x'"],
    ['"col:x"', '"col:x"'],
    ['$$ :x $$', '$$ :x $$'],
    ['$body$ :x $$ :y $body$', '$body$ :x $$ :y $body$'],
    ['-- :x\n', '-- :x\n'],
    ['/* :x /* :y */ :z */', '/* :x /* :y */ :z */'],
  ])('ignores parameters inside %s', (sql, expected) => {
    expect(positional(`${sql} :real`)).toEqual({ text: `${expected} $1`, names: ['real'] });
  });

  test('a plain quote string does not take backslash escapes', () => {
    expect(positional("SELECT 'a\\' , :p")).toEqual({ text: "SELECT 'a\\' , $1", names: ['p'] });
  });

  test('colons not followed by a name are kept (array slices, :=)', () => {
    expect(positional('SELECT a[1:2], b[:3], :x')).toEqual({ text: 'SELECT a[1:2], b[:3], $1', names: ['x'] });
  });

  test('an unterminated literal swallows the rest, as PostgreSQL would reject it anyway', () => {
    expect(positional("SELECT ':x")).toEqual({ text: "SELECT ':x", names: [] });
  });

  test('a name may start with an underscore and hold capitals and digits', () => {
    expect(positional('SELECT :_a, :Ab9')).toEqual({ text: 'SELECT $1, $2', names: ['_a', 'Ab9'] });
  });

  test.each([
    ["e'\\' :x'", "e'\\' :x'"], // lower-case escape string
    ['"a"":x"', '"a"":x"'], // a doubled quote inside a quoted identifier
  ])('ignores parameters inside %s', (sql, expected) => {
    expect(positional(`${sql} :real`)).toEqual({ text: `${expected} $1`, names: ['real'] });
  });

  test('an escape string at the very start of the text takes backslash escapes', () => {
    expect(positional("E'\\' :x' :real")).toEqual({ text: "E'\\' :x' $1", names: ['real'] });
  });

  test('a quote right after an identifier ending in E is a plain string, without backslash escapes', () => {
    expect(positional("SELECT typE'a\\' , :p")).toEqual({ text: "SELECT typE'a\\' , $1", names: ['p'] });
  });

  test('a $ inside an identifier or before a digit does not open a dollar quote', () => {
    expect(positional('SELECT foo$bar$, $1, :p')).toEqual({ text: 'SELECT foo$bar$, $1, $1', names: ['p'] });
  });

  test.each([
    ['a line comment at the end, without a newline', 'SELECT :a -- :x'],
    ['an unterminated dollar quote', 'SELECT :a, $$ :x'],
    ['an unterminated block comment', 'SELECT :a /* :x'],
  ])('%s swallows the rest', (_what, sql) => {
    expect(positional(sql)).toEqual({ text: sql.replace(':a', '$1'), names: ['a'] });
  });
});

// Where the SQL scanner must not stop early or skip too far: each case has a parameter after
// (or inside) the construct, so a scanner that mistakes where a string, comment or dollar
// quote ends loses or invents a parameter.

const names = (sql: string) => positional(sql).names;

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
