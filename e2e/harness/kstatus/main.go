// Command kstatus reads one Kubernetes object as JSON on stdin and prints
// what sigs.k8s.io/cli-utils/pkg/kstatus says about it, as one JSON line:
//
//	{"status":"Current","message":"Resource is current"}
//
// It is the same library Flux's kustomize-controller and `kubectl wait`-style
// tools use, so the e2e suite checks the LogicBundle status contract against
// the real thing rather than a re-implementation.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: not a Kubernetes object:", err)
		os.Exit(2)
	}
	res, err := status.Compute(obj)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: compute:", err)
		os.Exit(1)
	}
	out, err := json.Marshal(result{Status: res.Status.String(), Message: res.Message, Conditions: res.Conditions})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: encoding:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
