package policy

import "testing"

func TestPolicyPathMatching(t *testing.T) {
	allowed := []string{"/home", "/srv/"}
	for p, want := range map[string]bool{"/home": true, "/home/u/repo": true, "/homeless": false, "/srv/x": true, "/etc": false} {
		if got := under(p, allowed); got != want {
			t.Errorf("under(%q) = %v", p, got)
		}
	}
	for img, want := range map[string]bool{"localhost/agentrun/claude:1": true, "localhost/x": true, "docker.io/localhost/x": false, "localhostx/y": false} {
		if got := matchesAny([]string{"localhost/*"}, img); got != want {
			t.Errorf("matchesAny(%q) = %v", img, got)
		}
	}
}
