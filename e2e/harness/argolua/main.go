// Command argolua runs logicbundle's Argo CD health check and resource actions
// through Argo CD's own Lua code (github.com/argoproj/argo-cd/v3/util/lua, on
// gopher-lua), configured the way an Argo CD installation is: from the keys of
// the argocd-cm ConfigMap that logicbundle ships.
//
// It reads one JSON document on stdin,
//
//	{"data": {<argocd-cm data>}, "object": {<a LogicBundle>}}
//
// and prints one JSON line, by sub-command:
//
//	argolua health          {"status":"Healthy","message":"..."}
//	argolua discovery       [{"name":"promote","disabled":true,...}, ...]
//	argolua action NAME     [{"operation":"patch","resource":{...}}]
//
// A Lua error, or a result Argo CD would refuse, exits 1 with the reason on
// stderr; bad input exits 2.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	argolua "github.com/argoproj/argo-cd/v3/util/lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

type input struct {
	Data   map[string]string `json:"data"`
	Object json.RawMessage   `json:"object"`
}

const customizationsPrefix = "resource.customizations."

// overridesFromConfigMap reads the split resource.customizations.<type>.<group_kind>
// keys of argocd-cm into Argo CD's ResourceOverride values, keyed <group>/<kind>.
func overridesFromConfigMap(data map[string]string) (map[string]appv1.ResourceOverride, error) {
	overrides := map[string]appv1.ResourceOverride{}
	for key, value := range data {
		if !strings.HasPrefix(key, customizationsPrefix) {
			continue
		}
		kind, groupKind, found := strings.Cut(strings.TrimPrefix(key, customizationsPrefix), ".")
		if !found || groupKind == "" {
			return nil, fmt.Errorf("argocd-cm key %q is not resource.customizations.<type>.<group_kind>", key)
		}
		target := groupKind
		if group, k, ok := strings.Cut(groupKind, "_"); ok {
			target = group + "/" + k
		}
		override := overrides[target]
		switch kind {
		case "health":
			override.HealthLua = value
		case "actions":
			override.Actions = value
		case "useOpenLibs":
			open, err := strconv.ParseBool(value)
			if err != nil {
				return nil, fmt.Errorf("argocd-cm key %q: %w", key, err)
			}
			override.UseOpenLibs = open
		default:
			return nil, fmt.Errorf("argocd-cm key %q: customization %q is not run by this checker", key, kind)
		}
		overrides[target] = override
	}
	return overrides, nil
}

func run(args []string, in input) (any, error) {
	overrides, err := overridesFromConfigMap(in.Data)
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(in.Object); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	vm := argolua.VM{ResourceOverrides: overrides}
	switch {
	case len(args) == 1 && args[0] == "health":
		status, err := argolua.ResourceHealthOverrides(overrides).GetResourceHealth(obj)
		if err != nil {
			return nil, err
		}
		if status == nil {
			return nil, fmt.Errorf("argocd-cm has no health check for %s", argolua.GetConfigMapKey(obj.GroupVersionKind()))
		}
		return status, nil
	case len(args) == 1 && args[0] == "discovery":
		scripts, err := vm.GetResourceActionDiscovery(obj)
		if err != nil {
			return nil, err
		}
		return vm.ExecuteResourceActionDiscovery(obj, scripts)
	case len(args) == 2 && args[0] == "action":
		definition, err := vm.GetResourceAction(obj, args[1])
		if err != nil {
			return nil, err
		}
		if definition.ActionLua == "" {
			return nil, fmt.Errorf("argocd-cm defines no action %q", args[1])
		}
		return vm.ExecuteResourceAction(obj, definition.ActionLua, nil)
	}
	return nil, errUsage
}

var errUsage = fmt.Errorf("usage: argolua health | discovery | action NAME  (input on stdin)")

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argolua: reading stdin:", err)
		os.Exit(2)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fmt.Fprintln(os.Stderr, "argolua: input is not {\"data\": ..., \"object\": ...}:", err)
		os.Exit(2)
	}
	result, err := run(os.Args[1:], in)
	if err == errUsage {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "argolua:", err)
		os.Exit(1)
	}
	out, err := json.Marshal(result)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argolua: encoding:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
