package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docs/api-reference.md is written by hand; this test keeps it whole: every
// field of the three kinds, every condition type, reason and phase declared
// in this package has a row there, and every reason row names one that
// exists. A reason added here without a row fails it.
const apiReference = "../../docs/api-reference.md"

// Where each kind's fields are documented: the "## " sections of the file.
var fieldSections = map[string][]string{
	"AgentRun":       {"AgentRun fields", "AgentRun status"},
	"PodmanHost":     {"PodmanHost"},
	"AgentRunRecord": {"AgentRunRecord"},
	"AgentRunBudget": {"AgentRunBudget"},
}

func TestAPIReferenceHasARowForEveryField(t *testing.T) {
	doc := readReference(t)
	for kind, obj := range map[string]any{"AgentRun": AgentRun{}, "PodmanHost": PodmanHost{}, "AgentRunRecord": AgentRunRecord{}, "AgentRunBudget": AgentRunBudget{}} {
		documented := map[string]bool{}
		for _, section := range fieldSections[kind] {
			for _, name := range doc.firstCells(section, "") {
				documented[name] = true
			}
		}
		typ := reflect.TypeOf(obj)
		for _, top := range []string{"Spec", "Status"} {
			f, ok := typ.FieldByName(top)
			if !ok {
				continue
			}
			// spec and status themselves need no row, their fields do.
			for _, path := range fieldPaths(jsonName(f), f.Type)[1:] {
				if !documented[path] {
					t.Errorf("%s: %s has no row in %s (sections %q)", kind, path, apiReference, fieldSections[kind])
				}
			}
		}
	}
}

func TestAPIReferenceHasARowForEveryConditionReasonAndPhase(t *testing.T) {
	doc := readReference(t)
	consts := stringConstants(t)
	for _, c := range []struct {
		prefixes []string
		table    string
	}{
		{[]string{"Condition", "HostCondition"}, "Condition"},
		{[]string{"Reason"}, "Reason"},
		{[]string{"Phase"}, "Phase"},
	} {
		rows := doc.firstCells("", c.table)
		declared := map[string]bool{}
		for name, value := range consts {
			if !hasAnyPrefix(name, c.prefixes) {
				continue
			}
			declared[value] = true
			if !slices.Contains(rows, value) {
				t.Errorf("%s = %q has no row in a %q table of %s", name, value, c.table, apiReference)
			}
		}
		if len(declared) == 0 {
			t.Errorf("no constant named %v in api/v1alpha1: the test no longer checks what it should", c.prefixes)
		}
		if c.table != "Reason" {
			continue
		}
		for _, row := range rows {
			if !declared[row] {
				t.Errorf("%s documents reason %q, which api/v1alpha1 does not declare", apiReference, row)
			}
		}
	}
}

// fieldPaths lists the JSON paths of a field and of the fields of this
// package's structs under it (spec.podman, spec.podman.volumes, ...); types
// from elsewhere (metav1.Time, a label selector, conditions) are leaves.
func fieldPaths(path string, typ reflect.Type) []string {
	paths := []string{path}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeOf(AgentRun{}).PkgPath() {
		return paths
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name := jsonName(f); name != "" && name != "-" {
			paths = append(paths, fieldPaths(path+"."+name, f.Type)...)
		}
	}
	return paths
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// stringConstants reads this package's non-test files for their string
// constants, by name; reflection cannot list constants.
func stringConstants(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[name.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	return consts
}

func hasAnyPrefix(s string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(s, p) })
}

// reference is the file as tables: for each row, its "## " section, its
// table's first header cell, and the backquoted names in its first cell.
type reference []struct {
	section, header string
	names           []string
}

var backquoted = regexp.MustCompile("`([^`]+)`")

func readReference(t *testing.T) reference {
	t.Helper()
	data, err := os.ReadFile(apiReference)
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	var section, header string
	inTable := false
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			section, inTable = strings.TrimPrefix(line, "## "), false
		case !strings.HasPrefix(line, "|"):
			inTable = false
		case !inTable:
			inTable = true
			header = strings.TrimSpace(strings.Split(line, "|")[1])
		case strings.HasPrefix(line, "|---"):
		default:
			var names []string
			for _, m := range backquoted.FindAllStringSubmatch(strings.Split(line, "|")[1], -1) {
				names = append(names, m[1])
			}
			ref = append(ref, struct {
				section, header string
				names           []string
			}{section, header, names})
		}
	}
	return ref
}

// firstCells returns the names in the first cells of the rows of a section
// (any, when empty) under tables whose first header is header (any, when
// empty).
func (r reference) firstCells(section, header string) []string {
	var names []string
	for _, row := range r {
		if (section == "" || row.section == section) && (header == "" || row.header == header) {
			names = append(names, row.names...)
		}
	}
	return names
}
