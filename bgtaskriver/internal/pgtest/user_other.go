//go:build !unix

package pgtest

import (
	"errors"
	"os/exec"
)

// osUser is a user that programs can run as: none here, where os.Geteuid is -1 and
// programs run as this process's user.
type osUser struct{ uid, gid int }

func lookupUser(string) (*osUser, error) {
	return nil, errors.New("running as another user is not supported on this system")
}

func runAs(*exec.Cmd, *osUser) {}
